"""House rules that keep the package readable: no import circles (module-level or inside functions),
one atomic-write helper, no test-only helpers in the package."""
import ast
import re

from conftest import REPO

PKG = REPO / "src/kappaflow"


def _module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """kappaflow module -> the kappaflow modules it imports anywhere (module level or in a function)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("kappaflow") and t != "kappaflow":
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_no_import_circles_in_the_package():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_atomic_writes_go_through_one_helper():
    pattern = re.compile(r"os\.replace\(|os\.rename\(|\.replace\((path|out|target|dst)\)|uuid\.uuid4\(|"
                         r"\.tmp\{os\.getpid\(\)\}")
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in PKG.rglob("*.py") if p.name != "atomic.py"
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line) and "save_figure" not in line]
    # stability.py renames the figure save_figure wrote atomically under a private name
    hits = [h for h in hits if not h.startswith("src/kappaflow/stability.py") or "tmp_fig" not in h]
    assert not hits, "hand-made temporary + rename (use kappaflow.atomic):\n" + "\n".join(hits)


def test_package_functions_are_used_by_the_product():
    """Every public top-level function of the package is called by the product (package, scripts, rules,
    CLI), not only by tests."""
    product = [*PKG.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "workflow").rglob("*.smk"),
               REPO / "Snakefile"]
    text = {p: p.read_text() for p in product}
    # readers of the formats kappaflow writes: the format's one home offers both directions
    # (users load FORCE_CONSTANTS_2ND/3RD and plan.csv with them, a results folder with results.load;
    # the tests check the round trip)
    readers = {"read_force_constants_2nd", "read_force_constants_3rd", "read_plan_csv", "load"}
    unused = []
    for path in PKG.rglob("*.py"):
        for node in ast.parse(text[path]).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name not in readers:
                uses = sum(len(re.findall(rf"\b{node.name}\b", t)) for t in text.values())
                if uses <= 1:  # only its own definition
                    unused.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not unused, "functions only tests use (move them to tests/):\n" + "\n".join(unused)
