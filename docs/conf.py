"""Sphinx configuration of fastbp's documentation.

Build (from the repository root, with ``pip install -e ".[docs]"``)::

    python -m sphinx -W -b html -d docs/_build/doctrees docs docs/_build/html
    python -m sphinx -W -b doctest -d docs/_build/doctrees docs docs/_build/doctest

The pages are Markdown (MyST); the API reference comes from the numpydoc docstrings (autodoc),
the CLI reference from ``fastbp.cli.build_parser()`` (sphinx-argparse). The doctest builder
runs every ``{doctest}``/``{testcode}`` block of the pages and every ``>>>`` example of the
docstrings that the API reference includes.
"""
import doctest
import os
import sys

import fastbp

HERE = os.path.dirname(os.path.abspath(__file__))

project = "fastbp"
author = "the fastbp developers"
copyright = "the fastbp developers"
version = release = fastbp.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# _generated: what docs/bench/plot_bench.py writes (the page includes the table); bench: its
# script and data
exclude_patterns = ["_build", "_generated", "bench"]

# MyST: $...$ math, anchors for the ## and ### headings of the pages
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# API reference: autodoc reads the docstrings, numpydoc renders their sections. Importing
# fastbp and its kernels compiles nothing (numba compiles a kernel on its first call).
autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Doctests: every group starts in a fresh namespace; examples write files only inside the
# temporary folder a page's hidden ``testsetup`` changes into.
doctest_global_setup = "import numpy as np\nimport fastbp"
doctest_default_flags = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
                         | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1)

html_theme = "pydata_sphinx_theme"
html_title = f"fastbp {release}"
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False


def _bench_figures():
    """Draw the Performance page's figures and table from docs/bench/bench.json when the JSON
    or the script is newer than them (about 2 s; matplotlib's Agg backend)."""
    sys.path.insert(0, os.path.join(HERE, "bench"))
    try:
        import plot_bench
    finally:
        sys.path.pop(0)
    sources = [plot_bench.DEFAULT_JSON, plot_bench.__file__]
    outputs = [os.path.join(plot_bench.DEFAULT_OUT, name) for name in plot_bench.OUTPUTS]
    if not all(os.path.exists(p) for p in outputs) or \
            max(map(os.path.getmtime, sources)) > min(map(os.path.getmtime, outputs)):
        plot_bench.main([])


_bench_figures()


# Every Python example of the pages runs in the doctests ({testcode}, {doctest}); a plain
# ```python block must say why it does not run, in its first line: "# not run: <reason>".
NOT_RUN = "# not run"


def _check_examples(app, doctree):
    from docutils import nodes
    from sphinx.util import logging

    for node in doctree.findall(nodes.literal_block):
        if node.get("language") in ("python", "python3", "py", "pycon") \
                and "testnodetype" not in node and not node.astext().startswith(NOT_RUN):
            logging.getLogger(__name__).warning(
                f"a Python example that the doctests do not run: make it a {{testcode}} or "
                f"{{doctest}} block, or start it with '{NOT_RUN}: <reason>'", location=node)


def setup(app):
    app.connect("doctree-read", _check_examples)
