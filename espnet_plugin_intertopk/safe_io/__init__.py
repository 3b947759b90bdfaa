"""Writing files so that nothing a user made is lost and no reader sees half a file:
atomic writes (``atomic``), output directories a tool may only reuse or remove when it
made them (``ownership``), and one-line errors for a user's mistakes (``errors``)."""
