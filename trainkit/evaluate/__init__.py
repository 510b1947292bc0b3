"""Does the adapter do what it was trained for: tool calls parsed and scored, adapters loaded and merged.

Owns the tool-call parsers and figures (toolcalls), generating and scoring a sample of conversations
(tool_eval), and finding, loading, prompting and merging a trained adapter (adapters) for evaluate.py,
sample.py and merge_adapter.py.

May import: trainkit.core, trainkit.config, trainkit.data.
"""
