"""The partition state store (base.py) and its two backends: Redis + Lua (redis_lua.py), memory."""
