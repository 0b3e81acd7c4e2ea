"""The Qwen2.5-VL judge stage: prompts, request building, response parsing, the async client
(``client``, the core), the hf and vllm backends, ``units`` (a unit's samples and its scores part),
``stage`` (the declaration) and ``config`` (the ``judge:`` section)."""
