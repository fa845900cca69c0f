"""Old home of the compiled protocol engine, kept only as an import alias.

The engine is split by concept: `compile` (definition → layouts), `decode` (frames → snapshot),
`encode` (state → frames, commands), `transforms` (each field transform, once) and `compiled`
(`CompiledProtocol`). `registry` and `runtime.client` still import from here; delete this module once
they import from `bmsgate.protocols` (or `bmsgate.protocols.compiled`).
"""

from bmsgate.protocols.compiled import CompiledProtocol, compile_definition, decode_hex_frames

__all__ = ["CompiledProtocol", "compile_definition", "decode_hex_frames"]
