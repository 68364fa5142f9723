"""One-fact recall of `langevin emt ask` with default options (issue 18).

Generates N documents (20 filler sentences of the needle benchmark with one
fact "NAME lives in CITY." at a random place, names, cities and fillers
taken from crates/langevin-emt/src/needle.rs), asks "Where does NAME live?"
with default options (memories), and with --no-memory, from a folder outside
the repository, and counts answers that contain CITY; empty answers are
counted separately. Prints accuracy with binomial standard errors.

Usage: python bench/emt/recall_defaults.py LANGEVIN_BIN [N] [SEED] [-- EXTRA ASK OPTIONS]
"""

import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lists():
    src = open(os.path.join(ROOT, "crates/langevin-emt/src/needle.rs")).read()
    out = {}
    for name in ("NAMES", "CITIES", "FILLER"):
        body = re.search(r"const %s: &\[&str\] = &\[(.*?)\];" % name, src, re.S).group(1)
        out[name] = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
    return out


def main():
    argv, extra_opts = sys.argv, []
    if "--" in argv:
        i = argv.index("--")
        argv, extra_opts = argv[:i], argv[i + 1 :]
    exe = os.path.abspath(argv[1])
    n = int(argv[2]) if len(argv) > 2 else 20
    seed = int(argv[3]) if len(argv) > 3 else 0
    L = lists()
    rng = random.Random(seed)
    names = rng.sample(L["NAMES"], n)
    res = {"memory": [], "no-memory": []}
    empty = {"memory": 0, "no-memory": 0}
    with tempfile.TemporaryDirectory() as d:
        for i, name in enumerate(names):
            city = rng.choice(L["CITIES"]).strip()
            filler = rng.sample(L["FILLER"], 20)
            filler.insert(rng.randrange(21), f"{name} lives in {city}.")
            doc = os.path.join(d, f"doc{i}.txt")
            with open(doc, "w") as f:
                f.write(" ".join(filler) + "\n")
            for cond, extra in (("memory", ["--memory", doc]), ("no-memory", ["--no-memory"])):
                out = subprocess.run(
                    [exe, "emt", "ask", *extra, *extra_opts, "--question", f"Where does {name} live?", "--json", "--quiet"],
                    cwd=d, capture_output=True, text=True, check=True,
                )
                a = json.loads(out.stdout)
                empty[cond] += bool(a["empty"])
                res[cond].append(city.lower() in a["answer"].lower())
                print(f"{cond:9} {city:12} {a['answer'][:90]!r}", file=sys.stderr)
    for cond, hits in res.items():
        p = sum(hits) / len(hits)
        se = math.sqrt(p * (1 - p) / len(hits))
        print(f"{cond}: {sum(hits)}/{len(hits)} = {p:.0%} (se {se:.0%}), empty answers {empty[cond]}")


if __name__ == "__main__":
    main()
