"""Foreign streaming protocols (Twilio Media Streams, Genesys AudioHook, OpenAI Realtime
transcription), each a sans-I/O `ProtocolAdapter` over the native session (`adapter.py`)."""
