"""The ``llm2vec-hf`` sub-commands, one module per verb, in pipeline order.

Each module holds its verb's argparse: ``HELP`` (one line for ``llm2vec-hf --help``), ``add_arguments(parser)``
and ``main(args) -> int``; its docstring is the verb's ``--help`` description. The work is done by library
modules that take typed arguments and raise `llm2vec_hf.errors` types; ``llm2vec_hf.cli`` prints those as one
line on stderr with exit status 2.
"""

from . import demo, encode, export, push, train
from . import eval as evaluate

#: verb -> its module, in pipeline order.
COMMANDS = {
    "train": train,
    "export": export,
    "encode": encode,
    "eval": evaluate,
    "push": push,
    "demo": demo,
}
