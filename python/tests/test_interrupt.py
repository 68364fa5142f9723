import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPTS = {
    "fit": """
import langevin
X, y = langevin.datasets.load("breast_cancer")
print("start", flush=True)
try:
    langevin.fit(X, y, seed=0, chains=2, steps=50_000_000, burn_in=100)
except KeyboardInterrupt:
    print("interrupted", flush=True)
""",
    # the methods that do not go through the run loop poll the same flag
    "nuts": """
import langevin
X, y = langevin.datasets.load("breast_cancer")
print("start", flush=True)
try:
    langevin.fit(X, y, seed=0, chains=2, method="nuts", steps=10_000_000)
except KeyboardInterrupt:
    print("interrupted", flush=True)
""",
    "vi": """
import langevin
X, y = langevin.datasets.load("breast_cancer")
print("start", flush=True)
try:
    langevin.fit(X, y, seed=0, method="vi", steps=500_000_000)
except KeyboardInterrupt:
    print("interrupted", flush=True)
""",
    "run": """
import numpy as np
from langevin import sgmcmc
t = sgmcmc.sgld.build(lambda p, b: (-0.5 * p @ p, -p), lr=0.01)
s = t.init(np.zeros(2))
print("start", flush=True)
try:
    t.run(s, None, 10**10)
except KeyboardInterrupt:
    print("interrupted", flush=True)
""",
}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
@pytest.mark.parametrize("what", sorted(SCRIPTS))
def test_ctrl_c_interrupts(what):
    p = subprocess.Popen([sys.executable, "-c", SCRIPTS[what]], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "start"
    time.sleep(2.0)
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert "interrupted" in out
    assert time.monotonic() - t0 < 30
    assert p.returncode == 0
