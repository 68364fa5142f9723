"""Decode speed of `langevin-emt` against llama.cpp on the same GGUF, machine and threads.

Runs, interleaved so that drift in machine load hits both alike, for threads 1 and 2,
without memories and with a document of MEMORY_TOKENS tokens (langevin-emt: as a memory
bank, k = 2 in all layers; llama.cpp: in its context, its way of remembering):
  * target/release/examples/decode_speed THREADS quantized TOKENS 1 MEM   (this crate)
  * node bench/emt/llamacpp/tokens_per_second.mjs MODEL THREADS TOKENS 1 MEM (llama.cpp
    3.21.1's prebuilt CPU binaries through node-llama-cpp)
and prints a markdown table of median tokens/s over ROUNDS rounds, the read bandwidth
and the bandwidth bound (weight bytes per token / bandwidth). JSON lines go to OUT.

Usage (after `cargo build --release -p langevin-emt --example decode_speed` and
`npm ci --prefix bench/emt/llamacpp`):
  python3 bench/emt/decode_speed.py [ROUNDS=5] [TOKENS=128] [MEMORY_TOKENS=2000] [OUT=bench/emt/decode_speed.jsonl]
"""

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_path():
    env = os.environ.get("LANGEVIN_EMT_MODEL")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "langevin", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    mem = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    out_path = sys.argv[4] if len(sys.argv) > 4 else os.path.join(ROOT, "bench/emt/decode_speed.jsonl")
    model = model_path()
    ours = os.path.join(ROOT, "target/release/examples/decode_speed")
    theirs = os.path.join(ROOT, "bench/emt/llamacpp/tokens_per_second.mjs")
    rows = []
    with open(out_path, "w") as f:
        for r in range(rounds):
            for threads in (1, 2):
                for m in (0, mem):
                    for name, cmd in (
                        ("langevin-emt", [ours, str(threads), "quantized", str(tokens), "1", str(m)]),
                        ("llama.cpp", ["node", theirs, model, str(threads), str(tokens), "1", str(m)]),
                    ):
                        for rec in run(cmd):
                            rec.update(round=r, name=name, memory_tokens=m)
                            f.write(json.dumps(rec) + "\n")
                            f.flush()
                            rows.append(rec)
                            print(name, threads, m, round(rec["tokens_per_second"], 1), file=sys.stderr)
    print("| threads | memory | langevin-emt tokens/s | llama.cpp tokens/s | ratio | read bandwidth GB/s | bandwidth bound tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        for m in (0, mem):
            def med(name, key="tokens_per_second"):
                v = [x[key] for x in rows if x["name"] == name and x["threads"] == threads and x["memory_tokens"] == m]
                return statistics.median(v)
            a, b = med("langevin-emt"), med("llama.cpp")
            memtxt = "none" if m == 0 else f"{m}-token document (EMT: bank, k = 2; llama.cpp: in context)"
            print(f"| {threads} | {memtxt} | {a:.1f} | {b:.1f} | {a / b:.2f} | "
                  f"{med('langevin-emt', 'read_bandwidth_gb_s'):.1f} | "
                  f"{med('langevin-emt', 'bandwidth_bound_tokens_per_second'):.0f} |")


if __name__ == "__main__":
    main()
