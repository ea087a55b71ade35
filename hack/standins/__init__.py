"""Local stand-ins for what the reference worker talks to and cannot run here:

- ``openai_api``: an OpenAI-style chat-completions API (the real one is an internet service),
  speaking its documented wire format: completions, server-sent-event streams with
  ``stream_options.include_usage``, and its error bodies (401 invalid_api_key, 429
  insufficient_quota and rate_limit_exceeded with retry-after, 404 model_not_found);
- ``endpoint``: the API gateway's answer endpoints (``POST /res`` and the ``/res/ws`` WebSocket).

Both are aiohttp applications served on loopback from a background thread (``serving``).
"""
