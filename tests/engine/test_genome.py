"""Genome, learning-rate grid, JSON form and search space."""

import json

import numpy as np
import pytest

from engine.errors import GenomeError
from engine.genome import GENE_NAMES, LR_VALUES, OPS, PAPER_GENOMES, Genome, SearchSpace, load_genome, snap_lr

PROSTATE_JSON = (
    '{"in2": 1, "in3": 0, "in4": 2, "op1": "p3d_3x3x3", "op2": "conv3d_3x3x3", '
    '"op3": "conv2d_5x5x1", "op4": "conv3d_1x1x1", "n_cells": 7, "nf1": 32, "lr": 0.0003}'
)


def test_json_form_is_exactly_the_documented_one():
    g = Genome.from_json(PROSTATE_JSON)
    assert g == PAPER_GENOMES["prostate"]
    assert g.to_json() == PROSTATE_JSON
    assert Genome.from_json(g.to_json()) == g
    assert "engine" not in g.to_json()  # no Python paths


def test_lr_grid_has_27_values_and_snaps_within_relative_1e6():
    assert len(LR_VALUES) == 27 and LR_VALUES[0] == 1e-5 and LR_VALUES[-1] == 9e-3
    assert sorted(LR_VALUES) == list(LR_VALUES)
    assert snap_lr(0.0003) == 3e-4
    assert snap_lr(3e-4 * (1 + 5e-7)) == 3e-4
    with pytest.raises(GenomeError, match="grid"):
        snap_lr(3e-4 * (1 + 1e-5))
    with pytest.raises(GenomeError):
        snap_lr(1e-2)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"in2": 2}, "in2"),
        ({"in3": -1}, "in3"),
        ({"in4": 4}, "in4"),
        ({"in4": 1.5}, "in4"),
        ({"in2": True}, "in2"),
        ({"op1": "conv3d_9x9x9"}, "op1"),
        ({"op4": None}, "op4"),
        ({"n_cells": 6}, "n_cells"),
        ({"nf1": 64}, "nf1"),
        ({"lr": 0.5}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_invalid_genomes_are_rejected_with_the_gene_named(change, match):
    d = json.loads(PROSTATE_JSON)
    d.update(change)
    with pytest.raises(GenomeError, match=match):
        Genome.from_dict(d)


def test_missing_and_unknown_genes_and_bad_json():
    d = json.loads(PROSTATE_JSON)
    del d["nf1"]
    with pytest.raises(GenomeError, match="missing.*nf1"):
        Genome.from_dict(d)
    d = json.loads(PROSTATE_JSON)
    d["depth"] = 3
    with pytest.raises(GenomeError, match="unknown.*depth"):
        Genome.from_dict(d)
    with pytest.raises(GenomeError, match="not valid JSON"):
        Genome.from_json("{in2: 1")
    with pytest.raises(GenomeError, match="JSON object"):
        Genome.from_dict([1, 2])


def test_load_genome_from_string_and_file(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(PROSTATE_JSON)
    assert load_genome(str(f)) == PAPER_GENOMES["prostate"]
    assert load_genome(PROSTATE_JSON) == PAPER_GENOMES["prostate"]
    wrapped = tmp_path / "training.json"
    wrapped.write_text(json.dumps({"schema_version": 1, "genome": json.loads(PROSTATE_JSON)}))
    assert load_genome(wrapped) == PAPER_GENOMES["prostate"]
    with pytest.raises(GenomeError, match="no_such.json"):
        load_genome(tmp_path / "no_such.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(GenomeError, match="bad.json"):
        load_genome(bad)


def test_genome_is_hashable_and_frozen():
    g = PAPER_GENOMES["hippocampus"]
    assert len({g, Genome.from_json(g.to_json())}) == 1
    with pytest.raises(Exception):
        g.nf1 = 8  # type: ignore[misc]
    assert g.replace(nf1=8).nf1 == 8 and g.nf1 == 32


def test_default_space_is_the_papers():
    s = SearchSpace()
    assert s.cardinalities == (2, 3, 4, 10, 10, 10, 10, 3, 3, 27)
    assert s.size() == 2 * 3 * 4 * 10**4 * 3 * 3 * 27
    assert s.values("op1") == OPS


def test_space_restriction_sampling_encoding():
    s = SearchSpace(op1=("conv3d_3x3x3", "identity"), nf1=(8,), n_cells=(5,), lr=(1e-3, 0.0003))
    assert s.lr == (3e-4, 1e-3)  # canonical order
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        g = s.sample(rng)
        assert s.contains(g)
        assert g.nf1 == 8 and g.n_cells == 5 and g.op1 in ("conv3d_3x3x3", "identity")
        assert s.decode(s.encode(g)) == g
        seen.add(g.op1)
    assert seen == {"conv3d_3x3x3", "identity"}
    with pytest.raises(GenomeError, match="op1='p3d_3x3x3' is outside"):
        s.validate(PAPER_GENOMES["prostate"])
    with pytest.raises(GenomeError, match="nf1=32 is outside"):
        s.validate(s.sample(rng).replace(nf1=32))
    # same seed, same samples
    a = [SearchSpace().sample(np.random.default_rng(7)) for _ in range(3)]
    b = [SearchSpace().sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_space_rejects_bad_values_and_round_trips():
    with pytest.raises(GenomeError, match="nf1"):
        SearchSpace(nf1=(12,))
    with pytest.raises(GenomeError, match="no allowed value"):
        SearchSpace(op2=())
    with pytest.raises(GenomeError, match="unknown gene"):
        SearchSpace.from_dict({"depth": [1]})
    s = SearchSpace(in4=(0, 3), op3=("p3d_5x5x5",))
    assert SearchSpace.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert set(s.to_dict()) == set(GENE_NAMES)
    assert sum(1 for _ in SearchSpace(op1=("identity",), op2=("identity",), op3=("identity",),
                                      op4=("identity",)).enumerate_structures()) == 2 * 3 * 4 * 3 * 3
