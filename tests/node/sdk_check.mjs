// Usage: node sdk_check.mjs BASE_URL MODEL EXPECTED_TEXT
// Drives oai-bridge with the official openai Node SDK; prints one JSON line with what it saw.
import OpenAI from "openai";

const [baseURL, model, expected] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0 });
const messages = [{ role: "user", content: "Hello from Node" }];
const out = {};

const completion = await client.chat.completions.create({ model, messages });
out.nonStream = completion.choices[0].message.content;
out.nonStreamFinish = completion.choices[0].finish_reason;
out.usage = completion.usage;

let text = "";
let roles = 0;
let usage = null;
const stream = await client.chat.completions.create({
  model, messages, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.delta.role) roles += 1;
    text += choice.delta.content ?? "";
  }
}
out.stream = text;
out.roles = roles;
out.streamUsage = usage;

// The stream helper throws on a missing role / finish_reason, and on a changed id.
const runner = client.chat.completions.stream({ model, messages });
const final = await runner.finalChatCompletion();
out.helper = final.choices[0].message.content;
out.helperRole = final.choices[0].message.role;
out.helperFinish = final.choices[0].finish_reason;

try {
  await client.chat.completions.create({ model, messages, temperature: 7 });
  out.error = null;
} catch (err) {
  out.error = { status: err.status, type: err.type, param: err.param, code: err.code };
}
out.ok = out.nonStream === expected && out.stream === expected && out.helper === expected;
console.log(JSON.stringify(out));
