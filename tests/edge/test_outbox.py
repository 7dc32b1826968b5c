from edgecv.edge.outbox import Outbox


def test_order_seq_and_persistence_across_reopen(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    seqs = [box.put("t", lambda s, i=i: f"{i}:{s}".encode()) for i in range(5)]
    assert seqs == sorted(seqs) and len(box) == 5
    box.remove(seqs[0])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    rows = again.pending()
    assert [r[0] for r in rows] == seqs[1:] and rows[0][2] == f"1:{seqs[1]}".encode()
    assert again.put("t", lambda s: b"x") > seqs[-1]   # seq keeps increasing after a restart


def test_bounded_size_drops_oldest(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_rows=3)
    for i in range(5):
        box.put("t", lambda s, i=i: str(i).encode())
    assert [r[2] for r in box.pending()] == [b"2", b"3", b"4"]
