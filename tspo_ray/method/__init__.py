"""The TSPO method as pure tensor code: the temporal agent (eq. 3), the sampling policy and selection methods,
GRPO, rewards and answer parsing. No Ray, no vLLM, no transformers, no file I/O."""
