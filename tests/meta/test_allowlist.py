"""The allow-list (tests/allowlist.toml, tests/harness/allowlist.py): the solutions and the stubs pass it for
every exercise; hostile code is caught, each snippet with its rule; honest code is not; a violation costs
the exercises whose module imports the file that holds it. Pure ast: nothing here imports a tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import allowlist, manifest

ROOT = Path(__file__).resolve().parents[2]
DDP = frozenset({"torch.distributed", "torch.nn.parallel"})


def tree_sources(name: str) -> dict[str, str]:
    root = ROOT / name
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))}


def rules_of(source: str, allowed: frozenset[str] = frozenset(), file: str = "attention.py") -> set[str]:
    return {v.rule for v in allowlist.scan(file, textwrap.dedent(source), allowed)}


def exercise(module: str, allowed: tuple[str, ...] = ()) -> manifest.Exercise:
    return manifest.Exercise(id="01", slug="x", title="x", module=module, functions=("f",), points=1,
                             allowed_imports=allowed)


# --- the project's own trees


@pytest.mark.parametrize("tree", ["solutions", "exercises"])
def test_every_exercise_of_the_manifest_passes_on_the_given_trees(tree):
    sources = tree_sources(tree)
    broken = {e.name: [v.message for v in allowlist.check(sources, e)] for e in manifest.load()}
    assert {name: found for name, found in broken.items() if found} == {}


@pytest.mark.parametrize("tree", ["solutions", "exercises"])
def test_every_file_an_exercise_imports_is_judged_and_the_scripts_are_not_imported(tree):
    """The command-line scripts (train.py, chat.py, ...) use argparse, tqdm, sockets: they may, because
    no exercise's module imports them, so the grader never runs them. If one ever did, check would judge it."""
    sources = tree_sources(tree)
    reached = set().union(*(allowlist.reached_files(sources, e.module) for e in manifest.load()))
    scripts = {"train.py", "sample.py", "chat.py", "finetune.py", "pretrained.py", "hf_complete.py",
               "assistant_data.py", "threads.py"}
    assert not reached & scripts
    assert {f"{e.module}.py" for e in manifest.load()} | {"__init__.py", "config.py", "pretokenize.py"} <= reached
    for file in reached:
        allowed = DDP if file == "distributed.py" else frozenset()
        assert allowlist.scan(file, sources[file], allowed) == [], file


def test_the_policy_file_reads_and_every_rule_is_described():
    policy = allowlist.policy()
    used = {rule for rule, _ in policy.refused.values()} | set(policy.refused_attributes.values())
    assert used <= set(policy.rules)
    assert {"imports", "frames", "dunder", "private", "reflection", "code", "processes", "loading"} <= set(policy.rules)
    assert "torch.distributed" in policy.by_exercise and "torch" in policy.allowed


# --- hostile code: each snippet is caught with its rule

ISSUE_24_ATTACK = textwrap.dedent("""
    import sys

    frame = sys._getframe()
    while frame is not None:
        guard = frame.f_locals.get("guard")
        if guard is not None and hasattr(guard, "uninstall"):
            guard.uninstall()
        frame = frame.f_back
""")

HOSTILE = [
    ("issue 24 item 1: walk the frames up to the guard", ISSUE_24_ATTACK, "frames"),
    ("sys._getframe", "import sys\nf = sys._getframe(1)", "frames"),
    ("from sys import _getframe", "from sys import _getframe\n", "frames"),
    ("sys aliased", "import sys as s\ns._getframe(0)", "frames"),
    ("sys assigned", "import sys\ns = sys\ns._getframe(0)", "frames"),
    ("inspect", "import inspect\ninspect.currentframe()", "frames"),
    ("traceback", "import traceback\n", "frames"),
    ("a traceback's frame", "try:\n    1 / 0\nexcept Exception as e:\n    t = e.__traceback__", "frames"),
    ("tb_frame on anything", "f = tb.tb_frame.f_globals", "frames"),
    ("tb_next", "t = tb.tb_next", "frames"),
    ("generator frame", "g = (i for i in range(3))\nf = g.gi_frame", "frames"),
    ("generator code", "c = g.gi_code", "frames"),
    ("coroutine frame", "async def f():\n    pass\nc = f().cr_frame", "frames"),
    ("async generator frame", "f = agen.ag_frame", "frames"),
    ("f_back", "up = frame.f_back", "frames"),
    ("f_code", "c = frame.f_code", "frames"),
    ("frames in a lambda", "import sys\ng = lambda: sys._getframe(2).f_locals", "frames"),
    ("frames in a class body", "import sys\nclass A:\n    here = sys._getframe()", "frames"),
    ("frames in a comprehension", "import sys\nfs = [sys._getframe(i) for i in range(5)]", "frames"),
    ("frames in a decorator", "import sys\n@sys._getframe\ndef f():\n    pass", "frames"),
    ("frames in a string annotation", "def f(x: 'sys._getframe(1)'):\n    pass", "frames"),
    ("gc", "import gc\ngc.get_objects()", "internals"),
    ("ctypes", "import ctypes\n", "internals"),
    ("cffi", "from cffi import FFI\n", "internals"),
    ("builtins", "import builtins\nbuiltins.print = None", "internals"),
    ("__builtins__", "b = __builtins__['eval']", "internals"),
    ("a function's code", "def f():\n    pass\nc = f.__code__", "code"),
    ("co_ attributes", "consts = c.co_consts", "code"),
    ("sys.modules", "import sys\nm = sys.modules['harness']", "internals"),
    ("sys.modules through an alias", "import sys\ns = sys\nm = s.modules", "internals"),
    ("from sys import modules", "from sys import modules\n", "internals"),
    ("sys attribute off the list", "import sys\nsys.settrace(None)", "sys"),
    ("sys.exc_info", "import sys\nt = sys.exc_info()[2]", "sys"),
    ("__dict__", "d = obj.__dict__", "dunder"),
    ("type(x).__dict__", "d = type(x).__dict__", "dunder"),
    ("object.__subclasses__", "every = object.__subclasses__()", "dunder"),
    ("__globals__", "g = f.__globals__", "dunder"),
    ("__class__ in an f-string", "s = f'{x.__class__}'", "dunder"),
    ("__bases__ and __mro__", "b = C.__bases__ + C.__mro__", "dunder"),
    ("__closure__", "cells = f.__closure__", "dunder"),
    ("__self__ and __func__", "s = m.__self__\nf = m.__func__", "dunder"),
    ("__getattribute__", "g = object.__getattribute__(x, 'y')", "dunder"),
    ("__path__ of the package", "__path__.append('/tmp/elsewhere')", "dunder"),
    ("global __builtins__", "def f():\n    global __builtins__", "dunder"),
    ("match on __dict__", "match x:\n    case object(__dict__=d):\n        pass", "dunder"),
    ("torch._C", "import torch\ntorch._C._set_grad_enabled(True)", "private"),
    ("from torch import _C", "from torch import _C\n", "private"),
    ("import torch._dynamo", "import torch._dynamo\n", "private"),
    ("torch aliased, then _C", "import torch\nm = torch\nm._C", "private"),
    ("torch by walrus, then _C", "import torch\nif (m := torch):\n    m._C", "private"),
    ("private attribute of another object", "v = x._foo", "private"),
    ("private attribute of a tensor", "v = t._version", "private"),
    ("torch.ops", "import torch\ntorch.ops.aten.softmax.int(x, -1)", "internals"),
    ("torch aliased, then ops", "import torch as t\nt.ops.aten.softmax", "internals"),
    ("from torch import ops", "from torch import ops\n", "internals"),
    ("ops on an unknown object", "k = anything.ops.aten", "internals"),
    ("getattr with a computed name", "v = getattr(x, name)", "reflection"),
    ("getattr with a name built from pieces", "g = getattr(f, '__glo' + 'bals__')", "reflection"),
    ("getattr with a literal dunder", "g = getattr(f, '__globals__')", "dunder"),
    ("getattr(torch, 'ops')", "import torch\no = getattr(torch, 'ops')", "internals"),
    ("hasattr with a computed name", "ok = hasattr(x, name)", "reflection"),
    ("delattr with a computed name", "delattr(x, name)", "reflection"),
    ("getattr passed as a value", "import functools\nfunctools.reduce(getattr, ['a', 'b'], x)", "reflection"),
    ("a built-in shadowed, then deleted", "dir = 1\ndel dir\nnames = dir(x)", "reflection"),
    ("a built-in shadowed elsewhere", "def f(vars):\n    return vars\nv = vars(x)", "reflection"),
    ("a built-in through a default argument", "def f(g=getattr):\n    return g(x, name)", "reflection"),
    ("a built-in as a default of its own name", "def f(getattr=getattr):\n    return getattr(x, name)", "reflection"),
    ("a built-in as a lambda's default", "g = (lambda vars=vars: vars(x))()", "reflection"),
    ("a built-in through a comprehension's iterable", "fs = [dir for dir in [dir]]", "reflection"),
    ("getattr renamed", "g = getattr\ng(x, 'y')", "reflection"),
    ("vars", "v = vars(x)", "reflection"),
    ("globals", "g = globals()", "reflection"),
    ("locals", "l = locals()", "reflection"),
    ("dir", "names = dir(x)", "reflection"),
    ("exec", "exec('x = 1')", "code"),
    ("eval", "y = eval('1 + 1')", "code"),
    ("compile", "c = compile('1', 'f', 'eval')", "code"),
    ("__import__", "os = __import__('os')", "code"),
    ("importlib", "import importlib\nimportlib.import_module('gc')", "code"),
    ("from importlib import", "from importlib import import_module\n", "code"),
    ("runpy", "import runpy\n", "code"),
    ("types", "import types\nf = types.FunctionType(c, {})", "code"),
    ("typing.get_type_hints", "import typing\nh = typing.get_type_hints(f)", "code"),
    ("torch.fx", "import torch.fx\n", "code"),
    ("help", "help(x)", "code"),
    ("/proc", "m = open('/proc/self/maps').read()", "files"),
    ("/proc through pathlib", "from pathlib import Path\np = Path('/proc') / '1' / 'mem'", "files"),
    ("/dev", "m = open('/dev/mem', 'rb')", "files"),
    ("/sys", "open('/sys/kernel/yama/ptrace_scope')", "files"),
    ("a path glued from pieces", "p = '/pr' + 'oc/1/mem'", "files"),
    ("a path climbing out of the tree", "m = open('../../proc/self/mem', 'rb')", "files"),
    ("a path in an f-string", "p = f'/proc/{pid}/mem'", "files"),
    ("torch.library", "import torch\nlib = torch.library.Library('aten', 'IMPL')", "internals"),
    ("import torch.library", "import torch.library\n", "internals"),
    ("torch.library in a decorator", "import torch\n@torch.library.impl('aten::softmax', 'CPU')\ndef f():\n    pass",
     "internals"),
    ("cpp_extension", "from torch.utils import cpp_extension\n", "internals"),
    ("import cpp_extension", "import torch.utils.cpp_extension\n", "internals"),
    ("torch.overrides", "import torch.overrides\n", "internals"),
    ("torch.classes", "import torch\ntorch.classes.load_library('x.so')", "internals"),
    ("__torch_function__", "import torch\nclass T(torch.Tensor):\n"
     "    def __torch_function__(cls, f, t, a=(), k=None):\n"
     "        return 0", "internals"),
    ("__torch_dispatch__ assigned", "class T:\n    __torch_dispatch__ = handler", "internals"),
    ("__reduce__", "class A:\n    def __reduce__(self):\n        return (print, ('x',))", "internals"),
    ("torch.hub", "import torch\nm = torch.hub.load('a/b', 'c')", "loading"),
    ("torch.package", "from torch.package import PackageImporter\n", "loading"),
    ("torch.load without weights_only", "import torch\nsd = torch.load('w.pt')", "loading"),
    ("torch.load with weights_only=False", "import torch\nsd = torch.load('w.pt', weights_only=False)", "loading"),
    ("torch.load renamed", "from torch import load\nsd = load('w.pt')", "loading"),
    ("torch.jit.load", "import torch\nm = torch.jit.load('m.pt')", "loading"),
    ("pickle", "import pickle\n", "loading"),
    ("marshal", "import marshal\n", "loading"),
    ("shelve", "import shelve\n", "loading"),
    ("dill", "import dill\n", "loading"),
    ("numpy.ctypeslib", "import numpy as np\na = np.ctypeslib.as_array(p, (4,))", "internals"),
    ("numpy.load with allow_pickle", "import numpy as np\na = np.load('a.npy', allow_pickle=True)", "loading"),
    ("subprocess", "import subprocess\nsubprocess.run(['ls'])", "processes"),
    ("multiprocessing", "import multiprocessing\n", "processes"),
    ("torch.multiprocessing", "import torch.multiprocessing as mp\n", "processes"),
    ("os.system", "import os\nos.system('ls')", "processes"),
    ("os.popen", "import os\nos.popen('ls')", "processes"),
    ("os.fork", "import os\npid = os.fork()", "processes"),
    ("os.execv", "import os\nos.execv('/bin/sh', ['sh'])", "processes"),
    ("os.spawnl", "import os\nos.spawnl(os.P_NOWAIT, 'x')", "processes"),
    ("os.kill", "import os\nos.kill(1, 9)", "processes"),
    ("os.posix_spawn", "from os import posix_spawn\n", "processes"),
    ("os attribute off the list", "import os\nos.ptrace = 1\nfd = os.open('x', 0)", "os"),
    ("pty", "import pty\n", "processes"),
    ("signal", "import signal\n", "processes"),
    ("threading", "import threading\nthreading.Thread(target=f).start()", "processes"),
    ("socket", "import socket\n", "processes"),
    ("format reaching an attribute", "s = '{0.__globals__}'.format(f)", "reflection"),
    ("format reaching an item", "s = '{0[secret]}'.format(d)", "reflection"),
    ("format with a template from elsewhere", "def f(template, x):\n    return template.format(x)", "reflection"),
    ("str.format with a template from elsewhere", "def f(t, x):\n    return str.format(t, x)", "reflection"),
    ("format_map reaching an attribute", "s = '{x.y}'.format_map(d)", "reflection"),
    ("string.Formatter", "import string\nstring.Formatter().vformat(t, (f,), {})", "reflection"),
    ("operator.attrgetter", "from operator import attrgetter\n", "reflection"),
    ("operator.methodcaller", "import operator\nc = operator.methodcaller('uninstall')", "reflection"),
    ("a module passed to a function", "import torch\ndef f(m):\n    return m.ones(1)\nf(torch)", "modules"),
    ("a module in a list", "import sys\nmods = [sys]", "modules"),
    ("a module as a class attribute", "import torch\nclass A:\n    t = torch", "modules"),
    ("a module returned", "import sys\ndef f():\n    return sys", "modules"),
    ("a module reached through another", "import os\nm = os.sys", "modules"),
    ("torch reached through functional", "import torch.nn.functional as F\nt = F.torch", "modules"),
    ("a module of the tree passed on", "from . import attention\nuse(attention)", "modules"),
    ("a relative import leaving the tree", "from .. import harness\n", "imports"),
    ("the tree by the grader's name", "from tree import attention\n", "imports"),
    ("star import", "from torch import *\n", "imports"),
    ("a module off the list", "import requests\n", "imports"),
    ("torch.distributed outside exercise 18", "import torch.distributed as dist\n", "imports"),
    ("torch.distributed as an attribute outside 18", "import torch\ntorch.distributed.init_process_group('gloo')",
     "imports"),
    ("patching torch", "import torch\ntorch.softmax = my_softmax", "patching"),
    ("patching torch.nn.functional", "import torch.nn.functional as F\nF.scaled_dot_product_attention = f", "patching"),
    ("patching a torch class", "import torch\ntorch.Tensor.softmax = f", "patching"),
    ("patching through type()", "type(x).softmax = f", "patching"),
    ("setattr on a module", "import torch\nsetattr(torch, 'softmax', f)", "patching"),
    ("patching sys.stdout", "import sys\nsys.stdout = None", "patching"),
    ("resetting the memory counters", "import torch\ntorch.cuda.reset_peak_memory_stats()", "measures"),
    ("a forward hook on every module", "import torch\ntorch.nn.modules.module.register_module_forward_hook(h)",
     "hooks"),
    ("a hook on every saved tensor", "import torch\nwith torch.autograd.graph.saved_tensors_hooks(p, u):\n    pass",
     "hooks"),
    ("self rebound to another object", "class A:\n    def f(self, tracker):\n        self = tracker\n"
     "        return self._peak", "private"),
    ("self as a plain function's parameter", "def peek(self):\n    return self._peak", "private"),
    ("super() with another object", "class A(B):\n    def f(self, x):\n        return super(B, x)._peak", "private"),
    ("a private attribute of a class taken from the tree", "from .attention import Box\nv = Box._secret", "private"),
    ("__builtins__ of a tree module", "from .attention import __builtins__ as b\n", "dunder"),
    ("a file descriptor by number", "pipe = open(3, 'wb')", "files"),
    ("a source encoding that reads differently", "# -*- coding: utf-7 -*-\nx = 1", "code"),
    ("numpy's loader by another path", "import numpy as np\na = np.lib.npyio.load(f, allow_pickle=True)", "loading"),
    ("torch's loader by another path", "import torch\nsd = torch.serialization.load('w.pt')", "loading"),
    ("setattr on type() with a computed name", "setattr(type(x), name, f)", "reflection"),
    ("a class built from a dict", "import torch\nT = type('T', (torch.Tensor,), {'__torch_function__': f})", "code"),
    ("torch.utils passed on", "import torch\ndef f(u):\n    return u.benchmark.Timer('x')\nf(torch.utils)", "modules"),
    ("torch.utils from an import, in a list", "from torch import utils\nus = [utils]", "modules"),
    ("torch.nn in a default argument", "import torch\ndef f(nn=torch.nn):\n    return nn.parallel", "modules"),
    ("torch.load passed on", "import torch\nload = [torch.load][0]", "loading"),
    ("setattr on a class with a computed name", "import torch\nclass T(torch.Tensor):\n    pass\nC = T\n"
     "setattr(C, '__torch_' + 'function__', f)", "reflection"),
    ("TorchScript from text", "import torch\ncu = torch.jit.CompilationUnit('def f(x): return x')", "code"),
]


@pytest.mark.parametrize("source, rule", [(s, r) for _, s, r in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_code_is_caught_with_its_rule(source, rule):
    found = allowlist.scan("attention.py", textwrap.dedent(source), frozenset())
    assert rule in {v.rule for v in found}, [v.message for v in found]
    for v in found:
        assert v.message.startswith(f"attention.py line {v.line}: `") and f"(allow-list rule: {v.rule}" in v.message


def test_the_table_is_large_and_every_rule_is_exercised():
    assert len(HOSTILE) >= 40
    assert {r for _, _, r in HOSTILE} == set(allowlist.policy().rules)


# --- honest code passes

HONEST = [
    ("a forbidden built-in is the worker's to refuse, not the allow-list's",
     "import torch\nimport torch.nn.functional as F\ny = F.softmax(x, dim=-1) + torch.softmax(x, -1)"),
    ("F.scaled_dot_product_attention",
     "from torch.nn import functional as F\ny = F.scaled_dot_product_attention(q, k, v)"),
    ("private attributes of its own", "class A:\n    def __init__(self):\n        self._cache = {}\n"
     "    def get(self, k):\n        return self._cache.get(k)\n    @classmethod\n    def make(cls):\n"
     "        return cls._new()"),
    ("super().__init__()", "import torch\nclass M(torch.nn.Module):\n    def __init__(self, d):\n"
     "        super().__init__()\n"
     "        self.w = torch.nn.Parameter(torch.ones(d))\n    def forward(self, x):\n        return x * self.w"),
    ("names of classes", "n = type(x).__name__ + cls.__qualname__ + f.__doc__"),
    ("dataclasses", "from dataclasses import dataclass, field, fields, replace\n@dataclass(frozen=True)\nclass C:\n"
     "    n: int = 1\n    xs: list = field(default_factory=list)\n    def __post_init__(self):\n        pass\n"
     "d = replace(C(), n=2)\nnames = [f.name for f in fields(C)]"),
    ("string annotations", "from __future__ import annotations\nimport torch\n"
     "def f(x: 'torch.Tensor') -> torch.Tensor:\n"
     "    return x"),
    ("f-strings with attributes of its values", "s = f'{cfg.emb_dim} {x!r:>10} {y:.3f}'"),
    ("format with plain fields", "s = '{} {:>4} {name}'.format(a, b, name=c)\nTEMPLATE = '{a}-{b}'\n"
     "t = TEMPLATE.format(a=1, b=2)"),
    ("numpy", "import numpy as np\nrng = np.random.default_rng(0)\na = np.load('a.npy')\n"
     "b = np.asarray(a).astype(np.int64)"),
    ("torch.load with weights_only", "import torch\nsd = torch.load(path, map_location='cpu', weights_only=True)"),
    ("os and paths", "import os\nfrom pathlib import Path\np = Path(__file__).parent / 'data'\n"
     "d = os.environ.get('X', '')\nos.makedirs(os.path.join(d, 'x'), exist_ok=True)\nn = os.cpu_count()"),
    ("sys's public streams", "import sys\nsys.stderr.write('x')\nif len(sys.argv) > 2:\n    sys.exit(1)"),
    ("setattr with a child's name, as LoRA does", "for name, child in module.named_children():\n"
     "    setattr(module, name, LoRA(child))\nb = getattr(module, 'bias', None)"),
    ("the tree's own modules, private names included",
     "from .attention import softmax, _helper\nfrom . import attention\n"
     "y = attention.softmax(x) + attention._helper(x)"),
    ("breakpoint", "def f(x):\n    breakpoint()\n    return x"),
    ("module dunders", "__all__ = ['f']\nif __name__ == '__main__':\n    print(__doc__, __file__)"),
    ("classes with protocol methods", "class K:\n    __slots__ = ('key',)\n    def __init__(self, key):\n"
     "        self.key = key\n    def __lt__(self, other):\n        return self.key < other.key\n"
     "    def __len__(self):\n        return 1\n    def __getitem__(self, i):\n        return i\n"
     "    def __repr__(self):\n        return f'K({self.key})'"),
    ("torch flags", "import torch\ntorch.backends.cuda.matmul.allow_tf32 = True"),
    ("lambdas, comprehensions, generators", "f = lambda x: x + 1\nys = [f(x) for x in xs if x]\n"
     "d = {k: v for k, v in pairs}\ndef g():\n    yield from ys"),
    ("typing and collections", "from typing import Optional\nfrom collections.abc import Iterable\n"
     "from collections import Counter, defaultdict\nimport itertools, functools, heapq, math, re, random"),
    ("model methods named like modules", "for m in model.modules():\n    pass\nx.numpy()\nt = x.to(torch.float32)\n"
     "import torch"),
    ("torch.utils.data and checkpoint", "from torch.utils.data import DataLoader, Dataset\n"
     "from torch.utils.checkpoint import checkpoint\nimport torch\ny = checkpoint(f, x, use_reentrant=False)"),
    ("an alias of a torch module", "import torch\nF = torch.nn.functional\ny = F.gelu(x)"),
    ("exceptions", "try:\n    f()\nexcept (ValueError, KeyError) as e:\n    raise RuntimeError(str(e)) from e"),
    ("torch.compile and no_grad", "import torch\nm = torch.compile(model)\nwith torch.no_grad():\n    y = m(x)"),
    ("a docstring that names /dev/null", "def f():\n    '''Writes to /dev/null when quiet.'''\n    return 1"),
    ("a repr with the class's name", "class A:\n    def __repr__(self):\n        return f'{type(self).__name__}()'"),
    ("private methods of its own, in closures too", "import torch\nclass M(torch.nn.Module):\n"
     "    def _init_weights(self, m):\n        pass\n    def f(self, fn):\n        self._init_weights(fn)\n"
     "        def g():\n            return self._cache\n        super()._apply(fn)\n        return g"),
    ("torch values passed on", "import torch\nfrom torch import nn\ny = isinstance(x, (torch.Tensor, nn.Module))\n"
     "z = torch.zeros(2, dtype=torch.float32)\nlayers = [nn.Linear(2, 2), nn.GELU()]\nf(torch.nn.functional.gelu)"),
    ("nn.Module.register_module", "model.register_module('head', head)"),
    ("paths of the tree's data", "import os\np = os.path.join('data', 'dev', 'x.json')\nq = open('data/dev/x.json')"),
    ("variables named like built-ins", "from pathlib import Path\ndef save(model, dir, eval=False):\n"
     "    vars = [dir, eval]\n    return Path(dir) / 'x'\ndir = 'out'\nopen = None\nprint(dir, open)"),
    ("a UTF-8 source encoding", "# -*- coding: utf-8 -*-\nx = 1"),
    ("getattr of a public attribute of a torch module", "import torch\nmps = getattr(torch.backends, 'mps', None)\n"
     "dt = getattr(torch, 'float32')"),
]


@pytest.mark.parametrize("source", [s for _, s in HONEST], ids=[n for n, _ in HONEST])
def test_honest_code_passes(source):
    assert allowlist.scan("attention.py", textwrap.dedent(source), frozenset()) == []


def test_exercise_extras_allow_their_modules_only_there():
    code = "import torch\nimport torch.distributed as dist\nfrom torch.nn.parallel import DistributedDataParallel\n" \
           "dist.all_reduce(t, op=dist.ReduceOp.SUM)\nif torch.distributed.is_initialized():\n    pass"
    assert allowlist.scan("distributed.py", code, DDP) == []
    assert "imports" in {v.rule for v in allowlist.scan("distributed.py", code, frozenset())}
    sources = {"__init__.py": "", "distributed.py": code}
    assert allowlist.check(sources, manifest.lookup("ddp")) == []
    assert allowlist.check(sources, exercise("distributed")) != []


def test_a_syntax_error_is_not_a_violation():
    assert allowlist.scan("attention.py", "def f(:\n    import gc", frozenset()) == []
    assert allowlist.check({"__init__.py": "", "attention.py": "def f(:\n"}, exercise("attention")) == []


# --- what a violation costs

CLEAN = "import torch\n\ndef f(x):\n    return x\n"
DIRTY = "import gc\n"


def test_a_violation_costs_every_exercise_whose_module_imports_the_file():
    sources = {"__init__.py": "", "attention.py": CLEAN + DIRTY, "multihead.py": "from .attention import f\n",
               "block.py": "from . import multihead\n", "layers.py": CLEAN}
    for module in ("attention", "multihead", "block"):
        found = allowlist.check(sources, exercise(module))
        assert [(v.file, v.line, v.rule) for v in found] == [("attention.py", 5, "internals")], module
    assert allowlist.check(sources, exercise("layers")) == []


def test_a_violation_in_init_costs_every_exercise():
    sources = {"__init__.py": ISSUE_24_ATTACK, "attention.py": CLEAN, "layers.py": CLEAN}
    for module in ("attention", "layers", "missing"):
        assert "frames" in {v.rule for v in allowlist.check(sources, exercise(module))}


def test_subpackages_and_their_init_files_are_followed():
    sources = {"__init__.py": "", "attention.py": "from .sub.helpers import g\n", "sub/__init__.py": "import gc\n",
               "sub/helpers.py": "from ..layers import h\n\ndef g():\n    return h\n",
               "layers.py": "import ctypes\nh = 1\n"}
    assert allowlist.tree_imports("attention.py", sources["attention.py"], set(sources)) == {"sub/__init__.py",
                                                                                             "sub/helpers.py"}
    assert allowlist.tree_imports("sub/helpers.py", sources["sub/helpers.py"], set(sources)) == {"layers.py"}
    assert {(v.file, v.rule) for v in allowlist.check(sources, exercise("attention"))} == {
        ("sub/__init__.py", "internals"), ("layers.py", "internals")}


def test_a_module_taken_from_another_file_of_the_tree_is_refused():
    sources = {"__init__.py": "", "attention.py": "import torch as helpers\n",
               "block.py": "from .attention import helpers\ny = helpers.ops.aten\n",
               "model.py": "from . import attention\nk = attention.helpers.load('w.pt')\n"}
    block = allowlist.check(sources, exercise("block"))
    assert ("block.py", 1, "modules") in {(v.file, v.line, v.rule) for v in block}
    model = allowlist.check(sources, exercise("model"))
    assert ("model.py", 2, "modules") in {(v.file, v.line, v.rule) for v in model}
    assert allowlist.check(sources, exercise("attention")) == []


def test_a_name_another_file_imported_from_outside_the_tree_is_refused():
    sources = {"__init__.py": "", "attention.py": "from torch import nn\nimport math\n\ndef f():\n    return 1\n",
               "block.py": "from .attention import nn, f\nm = nn.parallel.DataParallel\n",
               "layers.py": "from . import attention\ny = attention.math.sqrt(2) + attention.f()\n"}
    def found(module):
        return {(v.file, v.line, v.rule) for v in allowlist.check(sources, exercise(module))}

    assert found("block") == {("block.py", 1, "modules")}
    assert found("layers") == {("layers.py", 2, "modules")}


def test_a_name_the_other_file_does_not_define_is_refused():
    """At grade time a module the exercise builds on is the grader's reference part, whose namespace holds the
    grader's imports (load_part, TorchDispatchMode): a name the learner's own file does not define is refused."""
    sources = {"__init__.py": "", "layers.py": "import torch\n\nclass LayerNorm:\n    pass\n\nEPS = 1e-5\n",
               "block.py": "from .layers import LayerNorm, EPS\nfrom .layers import load_part\n",
               "model.py": "from . import layers\nm = layers.TorchDispatchMode\nn = layers.LayerNorm\n"}
    assert {(v.file, v.line) for v in allowlist.check(sources, exercise("block"))} == {("block.py", 2)}
    assert {(v.file, v.line) for v in allowlist.check(sources, exercise("model"))} == {("model.py", 2)}
    message = allowlist.check(sources, exercise("block"))[0].message
    assert "takes load_part from layers.py, which does not define it" in message


def test_messages_name_the_file_the_line_the_code_and_the_rule():
    found = allowlist.scan("attention.py", ISSUE_24_ATTACK, frozenset())
    first = found[0]
    assert first.file == "attention.py" and first.line == 4 and first.rule == "frames"
    assert first.message.startswith("attention.py line 4: `sys._getframe` reaches the interpreter's frames")
    assert "learner code may not (allow-list rule: frames, tests/allowlist.toml)" in first.message
    assert "asks you to write this yourself" not in first.message  # the worker's words for a forbidden built-in
