"""No import cycles among the project's modules, imports inside functions included.

A cycle hides a layering mistake (two modules that each need the other belong together, or a third
one is missing) and makes import order matter. grimp reads every import statement of every module,
the ones inside functions too.
"""

import grimp

PACKAGES = ("engine", "emonas_gui")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycles_among_the_projects_modules():
    g = grimp.build_graph(*PACKAGES)
    graph = {m: {d for d in g.find_modules_directly_imported_by(m) if d.split(".")[0] in PACKAGES}
             for m in g.modules}
    cycles = strongly_connected(graph)
    detail = []
    for comp in cycles:
        members = set(comp)
        for m in comp:
            for d in sorted(graph[m] & members):
                lines = [x["line_number"] for x in g.get_import_details(importer=m, imported=d)]
                detail.append(f"{m} -> {d} (line {', '.join(map(str, lines))})")
    assert not cycles, "import cycles:\n" + "\n".join(detail)
