"""Numba options for every fastbp kernel, in one place.

* ``FASTMATH``: the LLVM fast-math flags fastbp compiles with. It allows reassociation (so the
  dot products and reductions vectorize) and contraction into FMA, but *not* ``nnan``/``ninf``:
  the compiler may not assume that values are finite, so NaN and infinity checks keep working.
* ``CACHE``: compiled kernels are cached on disk (numba's ``cache=True``). Numba writes next to
  the module's ``__pycache__`` and falls back to a per-user cache directory when the package
  directory is read-only. ``FASTBP_CACHE=0`` in the environment turns caching off;
  ``NUMBA_CACHE_DIR`` chooses another directory (numba's own variable). Where neither folder
  is writable (a read-only install with a read-only home), numba refuses ``cache=True``
  outright; fastbp then compiles those kernels without a cache (each process compiles what it
  uses), warns once, and lists them in ``UNCACHED``.
* Source digests: numba checks a cached function against its own source file only, but a
  fastbp kernel inlines the kernels it calls from other files, so an edited (or upgraded)
  ``dense.py`` would leave ``network.py``'s cached driver running the old code. Every cached
  kernel's name therefore carries a digest of its own module and of every fastbp module that
  module imports, directly or not (``module_digest``): an edit recompiles the kernels that can
  see it and no others (an edit to ``kernels/optim.py`` leaves the dense kernels cached).
* Own copies of callees: numba links a copy of every kernel a kernel calls into its module, as
  ``linkonce_odr`` (ELF weak) functions. A weak call binds, at load time, to whichever copy of
  that callee the process loaded first: in the process that compiled the caller, the callee's
  standalone build; in a process that loads the caller from the cache, the caller's own copy.
  With ``reassoc`` the two builds can round differently, so results depended on what was
  compiled where, and in which order (issue 17). ``_own_copies`` makes the linked callees of a
  fastbp kernel ``internal`` once its module is optimized: each kernel runs exactly the code of
  its own build, fresh or cached. It touches only the libraries of fastbp's kernels.
* Plain argument types: a kernel called from another kernel with a constant (``f(x, 0)``,
  ``g(..., True)``) would be typed, and compiled, for that literal value, a second build of
  the same code next to the one for ``int64`` or ``bool`` (numba specializes a callee per
  literal). ``_plain_calls`` types integer and boolean literals as their plain types in calls
  to fastbp kernels: one build per kernel and argument types, half the compile time of the
  kernels that were called both ways (docs/performance.md, "Compile cache and start-up").
* Link-only wrappers: for each ``prange`` loop numba builds the loop's body (a gufunc) and two
  wrapper libraries around it (the gufunc loop, the thread launcher), and gives each its own
  final optimization and machine code, although only the kernel that links them calls them, in
  its own module (optimized and emitted there). ``_skip_link_only`` links the two wrappers of a
  fastbp kernel's loops as they are: 11 to 17 % less compile time per kernel set, the same
  results (docs/performance.md, "Compile cache and start-up"). Other code's wrappers are left
  alone (a per-thread stack of the compiles in progress says whose loop it is).
* Deferred kernels: numba emits machine code for every kernel it compiles, also for one compiled
  only because another kernel calls it, whose code then runs only as the copy linked into its
  caller (and emitted again there). A fastbp kernel compiled while another fastbp kernel is
  being compiled is *deferred* (``Deferred``, ``_defer_nested``): optimized as before, so that
  every caller links the same code as before, but its own machine code, Python entry point and
  cache entry wait until something calls it from Python. A ``prange`` body compiled for a
  fastbp kernel gets no machine code of its own either (``LoopBody``): the kernel runs the copy
  linked into it. (Its code generation rewrites the IR the kernel links a little; that once
  mattered to kernels whose tiles spilled registers, no longer: docs/performance.md.) The
  network drivers (``jit(driver=True)``: they only slice buffers and call the layer kernels)
  are linked unoptimized when deferred: their caller's optimization passes over them anyway.
  Together, the kernel sets build in 0.6 to 0.9 of the time, and every result is bitwise what
  it was (docs/performance.md, "Compile cache and start-up"). Not done:
  leaving the layer kernels unoptimized too (a third less again, but each caller then
  optimized their raw loops in its own context, and a threaded kernel and its serial twin no
  longer rounded alike).
* ``no_cfunc_wrapper``: a kernel gets no C-callable wrapper (used only to pass a dispatcher as a
  first-class function value); calls from Python and from other ``@njit`` code are unchanged.
* ``jit(noalias=True)``: the layer kernels are compiled with numba's ``noalias`` flag, which marks
  every array argument's data as not overlapping any other argument's *written* data (C's
  ``restrict``). The compiler can then vectorize loops that store to several rows of one array
  while reading others, without run-time overlap checks. The contract is the one the checked
  wrappers (:mod:`fastbp.kernels.checked`) enforce: an output never shares memory with another
  argument. Numba gives its ``prange`` bodies the same flag by itself when they make no views.
"""
import ast
import hashlib
import os
import threading
import types
import warnings

import llvmlite.binding as ll
from numba import njit, types as nbtypes
from numba.core import caching, codegen, compiler, cpu, event
from numba.core import dispatcher as nb_dispatcher
from numba.core.compiler_lock import global_compiler_lock

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

CACHE = os.environ.get("FASTBP_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


_ROOT = os.path.dirname(os.path.abspath(__file__))
_digests = {}


def _module_file(name):
    """The source file of the fastbp module ``name`` (``fastbp.kernels.dense``), or None."""
    parts = name.split(".")[1:]
    for path in (os.path.join(_ROOT, *parts) + ".py", os.path.join(_ROOT, *parts, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _top_level(body):
    """The statements of a module body, with those inside top-level ``if``/``try`` blocks (not
    those of functions: an import inside a Python function binds no global a kernel can see)."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers"):
            if isinstance(node, (ast.If, ast.Try, ast.ExceptHandler)):
                yield from _top_level(getattr(node, block, []))


def _fastbp_imports(name):
    """The fastbp modules that the fastbp module ``name`` imports by relative name, at its top
    level. Each module is parsed once per process: every module's digest walks the modules it
    imports, and parsing them again for each one took half of ``import fastbp``
    (docs/performance.md, "Compile cache and start-up")."""
    if name not in _imports:
        _imports[name] = _parse_imports(name)
    return _imports[name]


_imports = {}


def _parse_imports(name):
    """``_fastbp_imports`` of ``name``, read from its source."""
    path = _module_file(name)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    with open(path, "rb") as fh:
        tree = ast.parse(fh.read())
    found = []
    for node in _top_level(tree.body):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            base += node.module.split(".") if node.module else []
            # ``from . import dense`` names modules; ``from .dense import jit`` names a module's
            # contents (a package's ``__init__`` only where no name is a submodule)
            subs = [".".join(base + [a.name]) for a in node.names
                    if _module_file(".".join(base + [a.name])) is not None]
            found.extend(subs or ([".".join(base)] if node.module else []))
    return found


def module_digest(name):
    """A digest (12 hex digits) of the fastbp module ``name`` and of every fastbp module it
    imports, directly or not: the code that a kernel defined there can inline."""
    if name not in _digests:
        seen, todo = set(), [name]
        while todo:
            mod = todo.pop()
            if mod not in seen:
                seen.add(mod)
                todo.extend(_fastbp_imports(mod))
        digest = hashlib.sha256()
        for mod in sorted(seen):
            with open(_module_file(mod), "rb") as fh:
                digest.update(mod.encode() + b"\0" + fh.read())
        _digests[name] = digest.hexdigest()[:12]
    return _digests[name]


DISPATCHERS = []  # every fastbp kernel, for fastbp._cache
# the same, by ``__qualname__`` (numba names a function's code library by it)
_BY_NAME = {}
UNCACHED = []     # kernels numba found no writable cache folder for (compiled in each process)

NO_CACHE_FOLDER = (
    "fastbp: numba found no writable folder for its compile cache (neither next to fastbp's "
    "modules nor numba's per-user cache folder), so fastbp's kernels are compiled in every "
    "process that uses them. Set NUMBA_CACHE_DIR to a writable folder to cache them, or "
    "FASTBP_CACHE=0 to turn caching off without this warning.")


def _own_copies(finalize_final_module):
    """Wrap ``CPUCodeLibrary._finalize_final_module`` (called once the module is optimized, just
    before machine code is emitted): in a fastbp kernel's library, the linked copies of its
    callees become ``internal`` (see the module notes). The module that other kernels link
    (``_shared_module``) is taken first, as numba would: there the copies stay ``linkonce_odr``,
    so that a caller keeps one copy of each callee."""
    def wrapper(library):
        module = library._final_module
        if library.name in _BY_NAME:
            if library._shared_module is None:
                shared = module.clone()
                for fn in shared.functions:
                    if not fn.is_declaration and fn.linkage == ll.Linkage.external:
                        fn.linkage = "linkonce_odr"
                library._shared_module = shared
            # (a deferred kernel's module, see below, was linked before this runs: numba made
            # its ``_shared_module`` then)
            for fn in module.functions:
                if not fn.is_declaration and fn.linkage == ll.Linkage.linkonce_odr:
                    fn.linkage = "internal"
        return finalize_final_module(library)
    wrapper.fastbp_own_copies = True
    return wrapper


if not getattr(codegen.CPUCodeLibrary._finalize_final_module, "fastbp_own_copies", False):
    codegen.CPUCodeLibrary._finalize_final_module = _own_copies(
        codegen.CPUCodeLibrary._finalize_final_module)


# numba's two wrapper libraries around a ``prange`` loop's body (the gufunc loop and the thread
# launcher): a kernel links and optimizes them into its own module, so their own optimization
# and machine code are never used
_PARFOR_WRAPPERS = ("parallelgufuncwrapper", "<numba.np.ufunc.wrappers._GufuncWrapper ")
_PARFOR_BODY = "__numba_parfor_gufunc_"
_compiling = threading.local()  # per thread: the fastbp kernel of each compile in progress


class _CompileStack(event.Listener):
    """Tracks, per thread, the compiles in progress: each fastbp kernel's dispatcher, or None
    for other code."""

    def on_start(self, ev):
        stack = _compiling.__dict__.setdefault("stack", [])
        d = ev.data.get("dispatcher")
        name = getattr(getattr(d, "py_func", None), "__qualname__", None)
        stack.append(d if d is not None and _BY_NAME.get(name) is d else None)

    def on_end(self, ev):
        stack = getattr(_compiling, "stack", None)
        if stack:  # empty only for a compile that started before fastbp was imported
            stack.pop()


def _link_only(library):
    """Whether ``library`` is a ``prange`` wrapper built for a fastbp kernel (see the notes)."""
    stack = getattr(_compiling, "stack", None)
    return bool(stack) and stack[-1] is not None and library.name.startswith(_PARFOR_WRAPPERS)


def _skip_link_only(optimize_final_module, finalize_final_module, get_pointer_to_function):
    """Wrap ``CPUCodeLibrary``'s final optimization and machine code emission, and
    ``JITCodeLibrary.get_pointer_to_function``: a link-only library (``_link_only``) is linked
    as it is, without either (the kernel linking it optimizes and emits it, as before); its
    machine code is emitted only if something asks for a pointer into it."""
    def optimize(library):
        deferred = getattr(library, "_fastbp_deferred", False)
        library._fastbp_link_only = deferred or _link_only(library)
        if (deferred and not getattr(library, "_fastbp_raw", False)) \
                or not library._fastbp_link_only:
            optimize_final_module(library)

    def finalize(library):
        if not getattr(library, "_fastbp_link_only", False):
            return finalize_final_module(library)
        library._finalize_dynamic_globals()
        library._verify_declare_only_symbols()
        library._finalized = True

    def pointer(library, name):
        if getattr(library, "_fastbp_link_only", False):
            library._fastbp_link_only = False
            finalize(library)
        return get_pointer_to_function(library, name)
    for wrapper in (optimize, finalize, pointer):
        wrapper.fastbp_link_only = True
    return optimize, finalize, pointer


class Deferred:
    """The entry point of a deferred kernel: a fastbp kernel compiled while another fastbp
    kernel is being compiled, for that kernel to link (see the notes). Its library is optimized
    and linked; its machine code waits until something calls it from Python (numba calls this
    object then), which emits it and puts the real entry point in its place, in the dispatcher
    and in the on-disk cache."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.cfunc = None

    def __call__(self, *args, **kwargs):
        return self.materialize()(*args, **kwargs)

    def materialize(self):
        """Emit the kernel's own machine code; returns its real entry point."""
        with global_compiler_lock:
            if self.cfunc is None:
                d = self.dispatcher
                args, cres = next((a, c) for a, c in d.overloads.items()
                                  if c.entry_point is self)
                library = cres.library
                library._fastbp_deferred = library._fastbp_link_only = False
                if getattr(library, "_fastbp_raw", False):
                    library._fastbp_raw = False
                    library._optimize_final_module()
                library._finalize_final_module()
                cfunc = _get_executable(d.targetctx, library, cres.fndesc, cres.environment)
                d.targetctx.insert_user_function(cfunc, cres.fndesc, [library])
                cres = cres._replace(entry_point=cfunc)
                d.overloads[args] = cres
                d._insert([a._code for a in args], cfunc, cres.objectmode)
                self.cfunc = cfunc
                d._cache.save_overload(args, cres)
        return self.cfunc


class LoopBody:
    """The entry point numba asks for a fastbp kernel's ``prange`` body (a gufunc): never called,
    the kernel runs its own linked copy (see the notes)."""

    def __call__(self, *args, **kwargs):
        raise RuntimeError("fastbp: a kernel's loop body is not callable on its own")


def is_deferred(cres):
    """Whether a compile result's machine code is still deferred (nothing to save yet)."""
    return isinstance(cres.entry_point, Deferred) and cres.entry_point.cfunc is None


def _defer_nested(get_executable, add_overload, save_overload):
    """Wrap numba's ``CPUContext.get_executable`` (the step of a compile that emits machine
    code and makes the Python entry point), ``Dispatcher.add_overload`` and
    ``Cache.save_overload``: a fastbp kernel compiled inside another fastbp kernel's compile is
    deferred (``Deferred``), its entry point kept out of numba's fast dispatch table and out of
    the cache until it exists."""
    def executable(context, library, fndesc, env):
        stack = getattr(_compiling, "stack", None)
        if stack and stack[-1] is not None and fndesc.qualname.startswith(_PARFOR_BODY):
            # a fastbp kernel's loop body: only the copy linked into the kernel runs
            library._fastbp_deferred = True
            library._ensure_finalized()
            return LoopBody()
        d = _BY_NAME.get(fndesc.qualname)
        # (not a kernel loaded from the cache while another one compiles: only the kernel whose
        # own compile is the innermost one)
        if d is None or not stack or stack[-1] is not d or all(k is None for k in stack[:-1]):
            return get_executable(context, library, fndesc, env)
        library._fastbp_deferred = True
        library._fastbp_raw = d.fastbp_driver
        library._ensure_finalized()
        return Deferred(d)

    def overload(dispatcher, cres):
        if is_deferred(cres):
            dispatcher.overloads[tuple(cres.signature.args)] = cres
        else:
            add_overload(dispatcher, cres)

    def save(cache, sig, data):
        if not is_deferred(data):
            save_overload(cache, sig, data)
    for wrapper in (executable, overload, save):
        wrapper.fastbp_deferred = True
    return executable, overload, save


if not getattr(codegen.CPUCodeLibrary._optimize_final_module, "fastbp_link_only", False):
    (codegen.CPUCodeLibrary._optimize_final_module, codegen.CPUCodeLibrary._finalize_final_module,
     codegen.JITCodeLibrary.get_pointer_to_function) = _skip_link_only(
        codegen.CPUCodeLibrary._optimize_final_module,
        codegen.CPUCodeLibrary._finalize_final_module,
        codegen.JITCodeLibrary.get_pointer_to_function)
    event.register("numba:compile", _CompileStack())

if not getattr(cpu.CPUContext.get_executable, "fastbp_deferred", False):
    _get_executable = cpu.CPUContext.get_executable
    (cpu.CPUContext.get_executable, nb_dispatcher.Dispatcher.add_overload,
     caching.Cache.save_overload) = _defer_nested(
        cpu.CPUContext.get_executable, nb_dispatcher.Dispatcher.add_overload,
        caching.Cache.save_overload)
    cpu.CPUContext.get_executable.fastbp_original = _get_executable
else:
    _get_executable = cpu.CPUContext.get_executable.fastbp_original


def _plain(ty):
    """An integer or boolean literal type as its plain type; other types as they are."""
    if isinstance(ty, (nbtypes.IntegerLiteral, nbtypes.BooleanLiteral)):
        return nbtypes.unliteral(ty)
    return ty


def _plain_calls(dispatcher):
    """Type the literal arguments of calls to ``dispatcher`` from other compiled code as plain
    integers and booleans (see the module notes). Numba asks a dispatcher for the template of
    each such call (``get_call_template``); the call site casts its arguments to the chosen
    signature. Calls from Python are unaffected (numba never types their arguments as literals)."""
    get_call_template = dispatcher.get_call_template

    def plain_call_template(args, kws):
        return get_call_template(tuple(_plain(a) for a in args),
                                 {k: _plain(v) for k, v in kws.items()})
    dispatcher.get_call_template = plain_call_template


class _NoAliasCompiler(compiler.CompilerBase):
    """Numba's standard nopython pipeline with the ``noalias`` flag set (see the module notes)."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [compiler.DefaultPassBuilder.define_nopython_pipeline(self.state)]


def jit(parallel=False, noalias=False, driver=False):
    """The decorator for a fastbp kernel: ``@jit()`` serial, ``@jit(parallel=True)`` threaded;
    ``noalias=True`` for kernels whose outputs never overlap their other arguments;
    ``driver=True`` for kernels that only call others (linked unoptimized: see the notes).

    ``nogil=True`` so that kernels release the GIL and models can train in several Python threads.
    With caching on, the function's ``__qualname__`` (which names its cache files) gets the
    suffix ``__<module_digest>``.
    """
    def decorate(pyfunc):
        if CACHE:
            pyfunc.__qualname__ = f"{pyfunc.__qualname__}__{module_digest(pyfunc.__module__)}"
        options = {"pipeline_class": _NoAliasCompiler} if noalias else {}

        def compile_with(cache):
            return njit(parallel=parallel, fastmath=set(FASTMATH), cache=cache, nogil=True,
                        no_cfunc_wrapper=True, error_model="numpy", **options)(pyfunc)

        try:
            dispatcher = compile_with(CACHE)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            if not CACHE or "no locator available" not in str(exc):
                raise
            if not UNCACHED:
                warnings.warn(NO_CACHE_FOLDER, RuntimeWarning, stacklevel=2)
            UNCACHED.append(pyfunc.__name__)
            dispatcher = compile_with(False)
        _plain_calls(dispatcher)
        dispatcher.fastbp_driver = driver
        _BY_NAME[pyfunc.__qualname__] = dispatcher
        DISPATCHERS.append(dispatcher)
        return dispatcher
    return decorate


def jit_pair(pyfunc):
    """Compile one Python kernel body twice: serial and parallel (``prange`` runs as ``range``
    in the serial one), both with ``noalias`` (outputs never overlap the other arguments).
    Returns ``(serial, parallel)``; the orchestration code picks the serial
    one where the work is too small to pay for waking the thread pool.

    The serial twin is a copy of the function under another ``__qualname__`` (``name_serial``):
    numba's on-disk cache keys entries by qualified name and signature, not by the ``parallel``
    option, so two dispatchers of one function object would overwrite each other's cache.
    """
    twin = types.FunctionType(pyfunc.__code__, pyfunc.__globals__, pyfunc.__name__ + "_serial",
                              pyfunc.__defaults__, pyfunc.__closure__)
    twin.__qualname__ = pyfunc.__qualname__ + "_serial"
    twin.__module__ = pyfunc.__module__
    twin.__doc__ = pyfunc.__doc__
    return jit(parallel=False, noalias=True)(twin), jit(parallel=True)(pyfunc)
