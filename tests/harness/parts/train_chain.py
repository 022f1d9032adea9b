"""Scenario for the ungraded known-answer training check (tests/integration/test_training_known_answer.py):
the learner's own chain — weights loader, model, schedule and train_step — repeats the training run
that reference/make_outputs.py recorded with transformers' GPT-2 and a plain PyTorch loop."""

import torch


def known_run(learner, state_dict, data, probe, run):
    model = learner("pretrained.from_state_dict")(state_dict, n_heads=run["n_heads"])
    model.train()
    learning_rate = learner("schedule.learning_rate")
    train_step = learner("training.train_step")
    opt = torch.optim.AdamW(model.parameters(), lr=run["max_lr"], weight_decay=run["weight_decay"])
    schedule = {k: run[k] for k in ("max_lr", "min_lr", "warmup_steps", "total_steps")}
    rows = iter(data.split(run["batch"]))
    lrs, losses, norms = [], [], []
    for step in range(run["steps"]):
        lr = learning_rate(step, **schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        micro = [(r[:, :-1], r[:, 1:]) for r in (next(rows) for _ in range(run["micro_batches"]))]
        loss, norm = train_step(model, opt, micro, max_norm=run["max_norm"])
        lrs.append(float(lr))
        losses.append(float(loss))
        norms.append(float(norm))
    model.eval()
    with torch.no_grad():
        logits = model(probe)
    return {"lr": lrs, "loss": losses, "grad_norm": norms, "logits_after": logits.detach().clone()}
