"""The probes: what may come back from a tree, and the reference parts graded checks substitute."""

import importlib
import textwrap
import warnings

import pytest

import torch

from harness.impl import Impl, InProcessBackend, Part
from harness.failures import LearnerError
from harness.manifest import Exercise, lookup


def tree_with(tmp_path, **modules):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, src in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(src))
    return root


def make_impl(root, exercise="01"):
    return Impl(InProcessBackend(root), lookup(exercise), {})


def test_plain_data_comes_back_exactly(tmp_path):
    root = tree_with(tmp_path, data="""
        def stuff():
            return {"ids": [1, 2, 3], (1, 2): b"ab", 3: ("x", None, 1.5, True)}
        def gen(n):
            yield from range(n)
    """)
    impl = make_impl(root)
    assert impl.call("data.stuff", returns="data").out == {"ids": [1, 2, 3], (1, 2): b"ab", 3: ("x", None, 1.5, True)}
    assert impl.call("data.gen", 4, returns="data").out == [0, 1, 2, 3]


def test_lying_types_are_refused(tmp_path):
    root = tree_with(tmp_path, data="""
        import torch
        class Liar(int):
            def __eq__(self, other):
                return True
        class T(torch.Tensor):
            pass
        def liar():
            return [Liar(3)]
        def subclass():
            return torch.zeros(2).as_subclass(T)
        def obj():
            return object()
    """)
    impl = make_impl(root)
    with pytest.raises(LearnerError, match="the grader can check only"):
        impl.call("data.liar", returns="data")
    with pytest.raises(LearnerError, match="should be a torch.Tensor"):
        impl.call("data.subclass")
    with pytest.raises(LearnerError, match="the grader can check only"):
        impl.call("data.obj", returns="data")


def test_method_chains_and_pseudo_methods(tmp_path):
    root = tree_with(tmp_path, things="""
        class Box:
            def __init__(self, items):
                self.items = list(items)
            @classmethod
            def of(cls, n):
                return cls(range(n))
            def __len__(self):
                return len(self.items)
            def __getitem__(self, i):
                return self.items[i]
            def __iter__(self):
                return iter(self.items)
            def double(self, k=2):
                return [k * i for i in self.items]
    """)
    impl = make_impl(root)
    res = impl.call("things.Box.of", 5, then=[("$len",), ("$getitem", (2,)), ("$list", (3,)), ("double", (), {"k": 3}), ("$attr", ("items",))])
    assert res.out is None
    assert res.then == [5, 2, [0, 1, 2], [0, 3, 6, 9, 12], [0, 1, 2, 3, 4]]
    with pytest.raises(LearnerError, match="no method `nope`"):
        impl.call("things.Box.of", 2, then=[("nope",)])


def test_substitute_replaces_earlier_exercises_with_reference_parts(tmp_path):
    root = tree_with(tmp_path, layers="""
        def gelu(x):
            raise NotImplementedError("not yet")
    """, block="""
        from .layers import gelu
        def double_gelu(x):
            return 2 * gelu(x)
    """)
    impl = make_impl(root)
    x = torch.randn(5)
    got = impl.call("block.double_gelu", x, substitute=("layers",)).out
    assert torch.allclose(got, 2 * torch.nn.functional.gelu(x, approximate="tanh"))
    with pytest.raises(Exception, match="not yet"):
        impl.call("block.double_gelu", x)  # the learner's own chain, without substitution


def test_reference_parts_have_the_exercise_modules_api():
    from harness import api
    from harness.manifest import ROOT

    parts = api.tree_api(ROOT / "tests" / "harness" / "parts")
    solutions = api.tree_api(ROOT / "solutions")
    for module, names in parts.items():
        if module not in solutions:
            continue  # a standalone part (a tiny model for generate's checks, say)
        public = {n for n in solutions[module] if not n.startswith("<") and n.split(".")[0][0] != "_"}
        missing = {n for n in public if "." not in n} - set(names)
        assert not missing, f"harness/parts/{module} lacks {missing}"


def test_trusted_parts_can_be_passed_as_arguments(tmp_path):
    root = tree_with(tmp_path, use="""
        def apply(norm, x):
            return norm(x)
    """)
    impl = make_impl(root)
    x, w = torch.randn(3, 4), torch.rand(4) + 0.5
    got = impl.call("use.apply", Part("layers.LayerNorm", 4), x).out
    assert torch.allclose(got, torch.nn.functional.layer_norm(x, (4,)), atol=1e-6)


def test_reference_parts_run_under_the_rules_of_the_exercises_that_use_them(tmp_path):
    """Exercise 07 forbids F.scaled_dot_product_attention, and its checks substitute the reference
    attention part: the part must not need it (no trusted code is exempt from the refusals), while
    the learner's own call is refused, on any thread."""
    root = tree_with(tmp_path, attention="""
        def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
            raise NotImplementedError
    """, heads="""
        import threading
        import torch.nn.functional as F
        from .attention import scaled_dot_product_attention
        def attend(q):
            return scaled_dot_product_attention(q, q, q, is_causal=True)
        def cheat(q):
            return F.scaled_dot_product_attention(q, q, q)
        def cheat_on_a_thread(q):
            out = []
            def run():
                try:
                    out.append(F.scaled_dot_product_attention(q, q, q))
                except RuntimeError:
                    pass  # caught, on another thread: still refused, and still recorded
            t = threading.Thread(target=run)
            t.start()
            t.join()
            return out[0] if out else q
    """)
    impl = make_impl(root, "07")
    q = torch.randn(1, 2, 3, 4)
    got = impl.call("heads.attend", q, substitute=("attention",)).out
    assert torch.allclose(got, torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True), atol=1e-6)
    with pytest.raises(LearnerError, match="your code called the kernel aten._scaled_dot_product"):
        impl.call("heads.cheat", q, substitute=("attention",))
    with pytest.raises(LearnerError, match="asks you to write this yourself"):
        impl.call("heads.cheat_on_a_thread", q, substitute=("attention",))
    # a debug run's refusals end with its probe: the grader's own torch works as before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = torch.randn(2, 3, 4, requires_grad=True)
        torch.nn.functional.scaled_dot_product_attention(x, x, x).sum().backward()
        torch.softmax(x, -1).sum().backward()


def test_the_part_that_implements_an_exercise_never_reaches_its_worker(tmp_path):
    root = tree_with(tmp_path, attention="""
        def softmax(x, dim=-1):
            return x
    """)
    with pytest.raises(ValueError, match="may not use the reference part for its own module"):
        make_impl(root, "01").call("attention.softmax", torch.zeros(2), substitute=("attention",))


def test_reaching_the_reference_parts_is_refused_by_the_allow_list(tmp_path):
    from harness import allowlist, treefiles

    root = tree_with(tmp_path, attention="""
        import sys
        def f(q):
            return sys.modules["kata_part_attention"].softmax(q)
    """, layers="""
        '''A docstring may say harness or DisableTorchFunction.'''
        # so may a comment: harness
        def g(x):
            return x
    """)
    sources = treefiles.read(root).sources
    found = [v for v in allowlist.check(sources, lookup("01"))]
    assert found and all(v.file == "attention.py" for v in found) and found[0].line == 4, found
    assert not allowlist.check(sources, lookup("02"))


def test_tuples_reach_the_learner_as_tuples_and_counters_come_back_as_dicts(tmp_path):
    root = tree_with(tmp_path, data="""
        import collections
        def kinds(pair, pairs, nested):
            return [type(pair).__name__, type(pairs[0]).__name__, type(nested["p"]).__name__]
        def counts(ids):
            return collections.Counter(zip(ids, ids[1:]))
    """)
    impl = make_impl(root)
    assert impl.call("data.kinds", (1, 2), [(3, 4)], nested={"p": (5, 6)}, returns="data").out == ["tuple", "tuple", "tuple"]
    assert impl.call("data.counts", [1, 2, 1, 2], returns="data").out == {(1, 2): 2, (2, 1): 1}


# --------------------------------------------------------------------------- scenarios


def test_a_scenario_drives_the_learner_and_returns_plain_data(tmp_path):
    root = tree_with(tmp_path, data="""
        def double(x):
            if x.numel() == 0:
                raise ValueError("nothing to double")
            return x * 2
    """)
    impl = make_impl(root)
    x = torch.arange(3.0)
    out = impl.scenario("selftest.twice", x).out
    assert torch.equal(out["once"], x * 2) and torch.equal(out["twice"], x * 4) and out["tree"] == "tree"
    assert impl.scenario("selftest.catch", torch.zeros(0)).out == {"raised": "ValueError", "message": "nothing to double"}
    with pytest.raises(LearnerError, match="the grader can check only"):
        impl.scenario("selftest.hand_back")


def test_a_learner_exception_inside_a_scenario_is_the_learners(tmp_path):
    root = tree_with(tmp_path, data="""
        def double(x):
            raise NotImplementedError("exercise 01 (attention), double: not yet")
    """)
    impl = make_impl(root)
    from harness.failures import NotStarted

    with pytest.raises(NotStarted, match="not yet"):
        impl.scenario("selftest.twice", torch.ones(2))
    (tmp_path / "b").mkdir()
    root2 = tree_with(tmp_path / "b", data="""
        def double(x):
            return x.no_such_method()
    """)
    with pytest.raises(LearnerError, match="AttributeError") as info:
        make_impl(root2).scenario("selftest.twice", torch.ones(2))
    assert "data.py" in str(info.value) + getattr(info.value, "details", "")


def _forbidden_calls():
    """One call of each API a manifest may forbid: a forbidden name without a call here fails the
    test below, so every refusal is tried (a builtin, say, that no kernel pattern covers)."""
    import torch.nn.functional as F
    from torch import nn

    x, q = torch.randn(2, 3, 4), torch.randn(1, 2, 3, 4)
    logits, t = torch.randn(5, 7), torch.randint(0, 7, (5,))
    p = nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)

    def adam_lists(step=0.0):  # params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps
        return [torch.randn(3)], [torch.randn(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.tensor(step)]

    fused_kwargs = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01, "eps": 1e-8, "amsgrad": False, "maximize": False}
    # the private single-tensor, multi-tensor and fused loops that adam() dispatches to
    inner_kwargs = {**fused_kwargs, "has_complex": False, "capturable": False, "differentiable": False, "decoupled_weight_decay": True}
    adam_kwargs = {**fused_kwargs, "foreach": False, "capturable": False, "differentiable": False, "fused": None, "grad_scale": None,
                   "found_inf": None, "has_complex": False}
    return {
        "torch.softmax": lambda: torch.softmax(x, -1),
        "torch.nn.functional.softmax": lambda: F.softmax(x, -1),
        "torch.Tensor.softmax": lambda: x.softmax(-1),
        "torch.special.softmax": lambda: torch.special.softmax(x, -1),
        "torch.log_softmax": lambda: torch.log_softmax(x, -1),
        "torch.nn.functional.log_softmax": lambda: F.log_softmax(x, -1),
        "torch.Tensor.log_softmax": lambda: x.log_softmax(-1),
        "torch.special.log_softmax": lambda: torch.special.log_softmax(x, -1),
        "torch.nn.functional.scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "torch.nn.functional.multi_head_attention_forward": lambda: nn.MultiheadAttention(4, 1, batch_first=True).train()(x, x, x),
        "torch.layer_norm": lambda: torch.layer_norm(x, (4,)),
        "torch.nn.functional.layer_norm": lambda: F.layer_norm(x, (4,)),
        "torch.native_layer_norm": lambda: torch.native_layer_norm(x, (4,), None, None, 1e-5),
        "torch.nn.functional.gelu": lambda: F.gelu(x),
        "torch._C._nn.gelu": lambda: torch._C._nn.gelu(x),
        "torch.nn.functional.group_norm": lambda: F.group_norm(x, 1),
        "torch.group_norm": lambda: torch.group_norm(x, 1),
        "torch.nn.functional.rms_norm": lambda: F.rms_norm(x, (4,)),
        "torch.rms_norm": lambda: torch.rms_norm(x, (4,)),
        "torch.nn.RMSNorm": lambda: nn.RMSNorm(4)(x),
        "torch.nn.functional.silu": lambda: F.silu(x),
        "torch.nn.SiLU": lambda: nn.SiLU()(x),
        "torch.nn.functional.glu": lambda: F.glu(x, -1),
        "torch.nn.GLU": lambda: nn.GLU(-1)(x),
        "torch.nn.MultiheadAttention": lambda: nn.MultiheadAttention(4, 1, batch_first=True)(x, x, x),
        "torch.nn.functional.cross_entropy": lambda: F.cross_entropy(logits, t),
        "torch.nn.functional.nll_loss": lambda: F.nll_loss(F.log_softmax(logits, -1), t),
        "torch.nn.utils.clip_grad_norm_": lambda: torch.nn.utils.clip_grad_norm_([p], 1.0),
        "torch.nn.utils.clip_grad_norm": lambda: torch.nn.utils.clip_grad_norm([p], 1.0),
        "torch.nn.utils.clip_grads_with_norm_": lambda: torch.nn.utils.clip_grads_with_norm_([p], 1.0, torch.tensor(2.0)),
        "torch.nn.utils.get_total_norm": lambda: torch.nn.utils.get_total_norm([p.grad]),
        "torch.optim.AdamW": lambda: torch.optim.AdamW([p]).step(),
        "torch.optim.Adam": lambda: torch.optim.Adam([p]).step(),
        "torch.optim.adamw.adamw": lambda: importlib.import_module("torch.optim.adamw").adamw(*adam_lists(), **adam_kwargs),
        "torch.optim.adam.adam": lambda: importlib.import_module("torch.optim.adam").adam(*adam_lists(), **adam_kwargs),
        "torch.optim.adam._single_tensor_adam": lambda: importlib.import_module("torch.optim.adam")._single_tensor_adam(
            *adam_lists(), None, None, **inner_kwargs),
        "torch.optim.adam._multi_tensor_adam": lambda: importlib.import_module("torch.optim.adam")._multi_tensor_adam(
            *adam_lists(), None, None, **inner_kwargs),
        "torch.optim.adam._fused_adam": lambda: importlib.import_module("torch.optim.adam")._fused_adam(*adam_lists(), None, None, **inner_kwargs),
        "torch._fused_adamw_": lambda: torch._fused_adamw_(*adam_lists(1.0), **fused_kwargs),
        "torch._fused_adam_": lambda: torch._fused_adam_(*adam_lists(1.0), **fused_kwargs),
    }


def test_every_forbidden_api_is_refused_on_any_thread_and_only_while_refused():
    import threading
    import warnings

    from harness import manifest
    from harness.worker.guard import Guard

    calls = _forbidden_calls()
    for ex in manifest.load():
        for name in ex.forbidden:
            assert name in calls, f"exercise {ex.id} forbids {name}: add a call of it to _forbidden_calls"
        if not ex.forbidden:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guard = Guard(ex.id, ex.forbidden, ex.forbidden_kernels, ex.forbidden_modules).install()
            try:
                for name in ex.forbidden:
                    with pytest.raises(RuntimeError, match="asks you to write this yourself"):
                        calls[name]()
                    caught = []

                    def on_a_thread():
                        try:
                            calls[name]()
                        except RuntimeError as e:
                            caught.append(str(e))

                    thread = threading.Thread(target=on_a_thread)
                    thread.start()
                    thread.join()
                    assert caught and "asks you to write this yourself" in caught[0], f"{ex.id}: {name} on a thread"
            finally:
                guard.uninstall()
            for name in ex.forbidden:
                calls[name]()  # the grader's own torch works again
