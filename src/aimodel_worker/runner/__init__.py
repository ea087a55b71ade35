"""``aimodel-worker``: the reference worker of the uplion system.

It consumes the requests the API gateway queues on ``model-<MODEL_NAME>`` (Shared subscription
``model-<MODEL_NAME>-subscription``), calls an OpenAI-style chat-completions API (a remote one,
or a local server in the same pod), delivers each answer to the request's ``endpoint`` (an HTTP
POST, or a WebSocket stream of chunks), publishes the usage to ``RES_TOPIC_NAME``, and reports
the errors no retry fixes through the SDK, which the operator turns into the AIModel's status.

Modules: ``settings`` (the environment); pure, no I/O: ``gateway`` (request messages, answer
frames, usage records), ``openai_api`` (the chat-completions wire format, error classification),
``sse`` (server-sent events), ``endpoints`` (where answers may go); ``upstream`` (the
chat-completions client), ``delivery`` (answers to endpoints),
``queue`` (Pulsar), ``worker`` (the loop, concurrency, acknowledgement, shutdown), ``cli``.
Needs the ``worker`` extra (``pip install 'aimodel-operator[worker]'``: pulsar-client).
"""
