"""The paper's policy table (Qin et al., DAC'24), reproduced on this CPU, resumable cell by cell.

Protocol, per dataset (``sharegpt``: human prompts with ChatGPT answers; ``chitchat``: human
dialogue), as the first author's code does it:

1. **Stream**: the first ``--stream`` (S, default 4600) labeled events of one user, in file
   order (unlabeled turns and events the validator rejects are skipped; they could not be
   trained on anyway).
2. **Windows**: every ``--window`` (W, default 800) events the buffer's contents (capacity
   ``--capacity``, B, default 64) join the training set and the buffer is cleared; the last,
   shorter window (4000..4600) is flushed at the end of the stream. The set therefore grows
   by at most B per window: 6 windows x 64 = at most 384 samples. "Cleared" means a fresh
   policy per window (seeded from the cell seed and the window index): a reservoir then
   samples each window uniformly, as the protocol intends, instead of carrying a stream-wide
   counter that would starve later windows.
3. **Training**: once, after the stream, LoRA on the accumulated set. *Deviation*: the paper
   fine-tunes at every checkpoint; on this 2-core CPU we collapse those runs into one run on
   the same final set (the set each checkpoint sees is a prefix of it).
4. **Evaluation**: ROUGE-1 F (greedy, ``--max-new-tokens``) on the ``--test`` (T) labeled
   events that follow the stream, skipping any event of a conversation that occurs in the
   stream (so no test prompt's context was trained on). We also record the mean answer loss
   (nats/token) of the test references, a lower-variance signal than ROUGE on 40 prompts.

Rows (see :data:`ROWS`): the five policies; ``whole`` (train on all S events, the upper
reference, fewer seeds: ``--whole-seeds``); ``base`` (no training, the lower reference;
greedy decoding makes it seed-independent, so it runs once); ablations ``sdss-no-eoe``,
``sdss-no-dss``, ``sdss-no-idd`` (that weight set to 0); synthesis ``sdss-synth1`` and
``sdss-synth3`` (k pairs generated per selected sample by the base model, filtered by
``SynthFilter``, added to the training set; ``sdss`` itself is k = 0); the combination rule's
IDD weight on the shipped domain rule, ``sdss-stream-idd0.5`` and ``sdss-stream-no-idd``, and
EOE's, ``sdss-stream-eoe2``, to be chosen on ``--test-turns validation`` and only then run on a
test set.

A **cell** is ``(dataset, row, seed)``; its JSON result is written atomically to
``<out>/cells/<dataset>/<row>/seed<k>.json`` and a rerun skips it. Costly shared work is
cached once per dataset under ``<out>/cache/`` (not meant to be committed): the parsed
stream and test set, LM last-token embeddings (centered and normalised as the flow does)
with EOE, DSS and the dominant domain of every stream event. Embedding is itself resumable
in chunks. Selection then takes seconds; the cell's cost is training plus evaluation.

Commands::

    python -m benchmarks.policy_table --list
    nohup python -m benchmarks.policy_table > benchmarks/results/policy_table/run.log 2>&1 &
    python -m benchmarks.policy_table --only dataset=chitchat,row=sdss+random
    python -m benchmarks.policy_table --report
"""

# The package, one idea per module:
#   plan        the rows, the configuration and its digest, the cells and their run order
#   data        the stream and test split, and the per-dataset cache (embeddings and scores)
#   model       the LM: loading, synthesis, resumable LoRA training
#   cells       selection and running a cell (select, train, evaluate) into its JSON file
#   bookkeeping what a cell records about how it was made (command, machine), reading it back
#   costs       what a cell costs: measured (--measure), modelled, and the embedding cache's throughput
#   report      table.md/.csv/.png from the finished cells
#   readme      copying the report's tables between the README's markers
#   cli         the command line (python -m benchmarks.policy_table)

from .bookkeeping import command_line, machine, read_cell, set_command_args
from .cells import run, run_cell, select
from .cli import build_parser, main
from .data import DatasetCache, Features, cache_root, load_split, prepare_dataset, set_cache_root
from .model import LM, load_model
from .plan import DATASETS, DEFAULT_OUT, ROWS, TEST_TURNS, Cell, Row, TableConfig, plan_cells
from .readme import README_BEGIN, README_END, readme_markers, splice_readme
from .report import write_report

__all__ = [
    "DATASETS", "DEFAULT_OUT", "LM", "README_BEGIN", "README_END", "ROWS", "TEST_TURNS", "Cell", "DatasetCache",
    "Features", "Row", "TableConfig", "build_parser", "cache_root", "command_line", "load_model",
    "load_split", "machine", "main", "plan_cells", "prepare_dataset", "read_cell", "readme_markers", "run", "run_cell",
    "select", "set_cache_root", "set_command_args", "splice_readme", "write_report",
]
