"""pipeline.tiles.cover: the tile table read for scheduling (the shards) without pandas."""

def test_read_shards_matches_the_tile_table_without_pandas(tmp_path):
    import pytest

    from pipeline.core.errors import InputDataError
    from pipeline.tiles.cover import read_shards, read_tiles_csv

    p = tmp_path / "tiles.csv"
    p.write_text("z,x,y,shard\n19,1,2,0123\n19,1,3,0123\n19,9,9,3012\n19,2,2,0013\n")
    assert read_shards(p) == sorted(read_tiles_csv(p).shard.unique()) == ["0013", "0123", "3012"]
    p.write_text("z,x,y\n19,1,2\n")
    with pytest.raises(InputDataError, match="expected columns z,x,y,shard"):
        read_shards(p)
    with pytest.raises(InputDataError, match="run CoverTiles first"):
        read_shards(tmp_path / "none.csv")


def test_tiles_by_shard_match_the_table_and_follow_a_rewritten_file(tmp_path):
    import os

    import pytest

    from pipeline.core.errors import InputDataError
    from pipeline.tiles.cover import read_tiles_csv, shard_tiles, tiles_by_shard

    p = tmp_path / "tiles.csv"
    p.write_text("z,x,y,shard\n19,1,3,0123\n19,1,2,0123\n19,9,9,3012\n19,2,2,0013\n")
    got = tiles_by_shard(p)
    df = read_tiles_csv(p)
    assert got == {s: shard_tiles(df, s) for s in ("0013", "0123", "3012")}  # in table order
    assert tiles_by_shard(p) is got  # read once
    p.write_text("z,x,y,shard\n19,5,5,0123\n")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert tiles_by_shard(p) == {"0123": shard_tiles(read_tiles_csv(p), "0123")}  # the new table
    with pytest.raises(InputDataError, match="run CoverTiles first"):
        tiles_by_shard(tmp_path / "none.csv")
