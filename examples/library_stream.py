"""Use oai-bridge as a library: stream OpenAI chunks straight from a Livepeer gateway.

Runs as is (it starts the built-in gateway simulator); pass a gateway URL to use a real one:
    python examples/library_stream.py [http://127.0.0.1:8935]
"""

import asyncio
import sys

from oai_bridge import BridgeError, livepeer_chat, livepeer_stream_chat
from oai_bridge.simulators.livepeer import start_simulator

REQUEST = {
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "messages": [{"role": "user", "content": "Tell me about Livepeer"}],
    "stream_options": {"include_usage": True},
    "max_tokens": 64,
}


async def main(gateway: str | None) -> None:
    simulator = None
    if gateway is None:
        simulator = await start_simulator()
        gateway = simulator.url
    try:
        async for chunk in livepeer_stream_chat(gateway, REQUEST):  # OpenAI chat.completion.chunk dicts
            for choice in chunk["choices"]:
                print(choice["delta"].get("content") or "", end="", flush=True)
            if chunk.get("usage"):
                print("\nusage:", chunk["usage"])
        reply = await livepeer_chat(gateway, REQUEST)  # one chat.completion (stream_options ignored)
        print("non-stream:", reply["choices"][0]["message"]["content"])
    except BridgeError as exc:  # .status and .body() are what the server would answer
        print("failed:", exc.status, exc.body(), file=sys.stderr)
    finally:
        if simulator is not None:
            await simulator.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
