from kvcache.worker_stats import LoadTotals, StatsPublisher, read_stats, stats_path


def test_published_stats_read_back_and_are_rate_limited(tmp_path):
    path = stats_path(tmp_path)
    assert read_stats(path) is None
    publisher = StatsPublisher(path, interval_s=3600)
    assert publisher.maybe_publish(lambda: {"ram": {"entries": 3}})
    assert not publisher.maybe_publish(lambda: {"ram": {"entries": 4}})  # within the interval
    body = read_stats(path)
    assert body["ram"] == {"entries": 3} and body["written_at"] > 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_torn_or_foreign_file_reads_as_none(tmp_path):
    path = stats_path(tmp_path)
    path.write_text('{"ram": ')
    assert read_stats(path) is None
    path.write_text("[1, 2]")
    assert read_stats(path) is None


def test_load_totals_add_up_and_give_the_bandwidth():
    totals = LoadTotals()
    assert totals.as_dict() == {"blocks": 0, "bytes": 0, "seconds": 0.0, "bytes_per_s": 0, "forward_seconds": 0.0}
    totals.add(3, 3_000_000, 0.002)
    totals.add(1, 1_000_000, 0.002)
    totals.add_forward(0.05)
    assert totals.as_dict() == {"blocks": 4, "bytes": 4_000_000, "seconds": 0.004, "bytes_per_s": 1_000_000_000,
                                "forward_seconds": 0.05}
