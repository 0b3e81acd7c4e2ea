"""The Qwen2.5-VL judge stage: prompts, request building, response parsing, the async client."""
