

def test_the_generation_shown_counts_from_one_and_stops_at_the_last():
    from engine.config import current_generation

    # the search reports generations completed: 0 while the initial population trains, G at the end
    assert [current_generation(g, 3) for g in range(4)] == [1, 2, 3, 3]
    assert current_generation(0, 1) == 1 and current_generation(1, 1) == 1
