"""llama.cpp's own HTTP server (`llama-server`, as the prebuilt xllamacpp wheel embeds it) on 127.0.0.1.

    python tests/llama_server.py MODEL.gguf PORT ALIAS N_CTX N_PARALLEL N_THREADS

Started by tests/servers.py with xllamacpp on PYTHONPATH; imports nothing else, serves until SIGTERM.
"""

import sys
import threading

import xllamacpp

model, port, alias, n_ctx, n_parallel, n_threads = sys.argv[1:7]
params = xllamacpp.CommonParams()
params.model.path = model
params.model_alias = {alias}
params.port = int(port)
params.n_ctx = int(n_ctx)  # shared by the slots: n_ctx / n_parallel tokens each
params.n_parallel = int(n_parallel)  # one slot (and its prompt cache) per row decoded at once
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = int(n_threads)
server = xllamacpp.Server(params)  # loads the model and listens; requests are served on its own threads
threading.Event().wait()
