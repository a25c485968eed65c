from cluster.rendezvous import owner, shares

KEYS = [f"kitchen-{i:04d}-cam-1" for i in range(2000)]


def test_every_node_computes_the_same_owner_whatever_the_order() -> None:
    members = ["node-a", "node-b", "node-c"]
    for key in KEYS[:200]:
        assert owner(key, members) == owner(key, list(reversed(members)))
    assert owner("anything", []) is None


def test_the_keys_are_spread_evenly() -> None:
    split = shares(KEYS, ["node-a", "node-b", "node-c"])
    assert sorted(split) == ["node-a", "node-b", "node-c"]
    assert sum(len(keys) for keys in split.values()) == len(KEYS)
    sizes = {member: len(keys) for member, keys in split.items()}
    assert all(abs(size - len(KEYS) / 3) < len(KEYS) * 0.05 for size in sizes.values()), sizes


def test_a_member_leaving_moves_only_its_own_keys() -> None:
    before = shares(KEYS, ["node-a", "node-b", "node-c"])
    after = shares(KEYS, ["node-a", "node-c"])
    for member in ("node-a", "node-c"):
        assert set(before[member]) <= set(after[member])
    moved = set(after["node-a"]) - set(before["node-a"])
    assert moved and moved <= set(before["node-b"])
    assert set(after["node-a"]) | set(after["node-c"]) == set(KEYS)


def test_a_member_joining_takes_about_its_share_from_every_other() -> None:
    before = shares(KEYS, ["node-a", "node-b"])
    after = shares(KEYS, ["node-a", "node-b", "node-c"])
    taken = set(after["node-c"])
    assert abs(len(taken) - len(KEYS) / 3) < len(KEYS) * 0.05
    for member in ("node-a", "node-b"):
        assert set(after[member]) == set(before[member]) - taken
        assert set(before[member]) & taken
