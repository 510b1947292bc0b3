"""Chat data, from the file a user brings to the exact tokens the trainer sees.

Owns loading JSONL through datasets and normalising tool calls (loading), the line-by-line checks
(checks), token lengths and the loss mask as trained (token_checks, training_view), converting other
formats (convert) and showing examples as they train (inspection). The training view is the one
definition of "the trained tokens" that the preflight, inspect_data.py and every backend share.

May import: trainkit.core, trainkit.config.
"""
