"""Backends of the `Engine`: where drafts come from. The in-process model over the PIE cache is the engine's own
path; `remote.RemoteBackend` asks a serving engine (llama.cpp's server, or the OpenAI-compatible API of vLLM and
SGLang) over HTTP, through one `base.EngineClient` per API. Either way the drafts are finished by the same
post-processing and ranking (`finish.finish_drafts`)."""
