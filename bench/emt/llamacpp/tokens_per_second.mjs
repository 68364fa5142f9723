// llama.cpp's decode speed on the GGUF that `langevin emt` uses, through the prebuilt
// binaries of node-llama-cpp 3.21.1 (CPU only, no build).
//
// Usage: node tokens_per_second.mjs MODEL.gguf THREADS [TOKENS=64] [REPEATS=3] [MEMORY_TOKENS=0]
// Prints one JSON line per repeat: {"threads", "prompt_tokens", "generated", "seconds",
// "tokens_per_second"}. The prompt is evaluated first (not timed); then TOKENS tokens are
// generated greedily and timed. With MEMORY_TOKENS > 0 a document of about that many
// tokens precedes the prompt (llama.cpp's way to "remember": the document in context).
import { getLlama } from "node-llama-cpp";

const [modelPath, threadsArg, tokensArg = "64", repeatsArg = "3", memArg = "0"] =
    process.argv.slice(2);
if (!modelPath || !threadsArg) {
    console.error("usage: node tokens_per_second.mjs MODEL.gguf THREADS [TOKENS] [REPEATS] [MEMORY_TOKENS]");
    process.exit(2);
}
const threads = Number(threadsArg), nGen = Number(tokensArg), repeats = Number(repeatsArg);
const memTokens = Number(memArg);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: 0, logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const filler = "The river bends past the old mill, where the town keeps its records of every harvest. ";
let doc = "";
while (model.tokenize(doc).length < memTokens) doc += filler;
const prompt = doc + "Once upon a time, in a small village by the sea, there lived";
const tokens = model.tokenize(prompt);
for (let rep = 0; rep < repeats; rep++) {
    const context = await model.createContext({ threads, contextSize: Math.max(2048, tokens.length + nGen + 16), batchSize: 512 });
    const seq = context.getSequence();
    // Evaluate the prompt, then time the generation of nGen tokens (greedy).
    await seq.evaluateWithoutGeneratingNewTokens(tokens);
    let n = 0;
    const t0 = process.hrtime.bigint();
    // One token to start generation from the evaluated prompt.
    for await (const _tok of seq.evaluate([tokens[tokens.length - 1]], { temperature: 0 })) {
        n += 1;
        if (n >= nGen) break;
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(JSON.stringify({ engine: "llama.cpp (node-llama-cpp 3.21.1)", threads, memory_tokens: memTokens, prompt_tokens: tokens.length, generated: n, seconds: s, tokens_per_second: n / s }));
    await context.dispose();
}
await model.dispose();
