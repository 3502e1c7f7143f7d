"""Everything that runs or talks to the vLLM engine: its child process, its HTTP client, the dtype policy, the LoRA
middleware that runs inside it, the engine's loaded adapter set, and the builders of the models it serves.

Importing this package is cheap: vLLM and torch are imported only by the modules that need them."""
