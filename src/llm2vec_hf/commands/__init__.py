"""The ``llm2vec-hf`` sub-commands, one module per verb, in pipeline order.

Each module holds its verb's argparse: ``HELP`` (one line for ``llm2vec-hf --help``), ``add_arguments(parser)``
and ``main(args) -> int``; its docstring is the verb's ``--help`` description. The work is done by library
modules that take typed arguments and raise `llm2vec_hf.errors` types; ``llm2vec_hf.cli`` prints those as one
line on stderr with exit status 2. ``e5`` and ``tiny_data`` are the two data-preparation
scripts, run as ``python -m llm2vec_hf.commands.e5`` / ``.tiny_data`` (not verbs of ``llm2vec-hf``).

The verbs are the one place where llm2vec_hf imports its own modules inside functions: a verb imports the library
modules it drives in ``main``, so that ``llm2vec-hf --help`` and each verb load only their own backends (train:
peft and the trainers, eval: mteb, encode --engine ray: Ray). Every other module imports at its top
(tests/test_import_graph.py keeps the graph acyclic, function-level imports included).
"""

from . import demo, encode, export, families, push, train
from . import eval as evaluate

#: verb -> its module, in pipeline order.
COMMANDS = {
    "train": train,
    "export": export,
    "encode": encode,
    "eval": evaluate,
    "push": push,
    "demo": demo,
    "families": families,
}
