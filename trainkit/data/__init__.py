"""Chat data, from the file a user brings to the exact tokens the trainer sees.

Owns reading a chat file the one way every command reads it (reader, over the line-by-line checks of
checks), loading it through datasets and normalising tool calls (loading, tool_arguments), token
lengths and the loss mask as trained (token_checks, training_view), converting other formats
(convert) and showing examples as they train (inspection). The training view is the one
definition of "the trained tokens" that the preflight, inspect_data.py and every backend share.

May import: trainkit.core, trainkit.config.
"""
