"""daily_returns, the check outcomes and the charts' record on a PostgreSQL warehouse: the same run as
test_see_data's late split and dividend."""

import pytest

from market_pipeline_tests import test_see_data

pytestmark = pytest.mark.postgres


@pytest.fixture
def warehouse_url(postgres_url):
    return postgres_url


def test_daily_returns_on_postgres(polygon_env, warehouse_url, instance):
    test_see_data.test_daily_returns_follow_the_total_return_view_through_a_late_split_and_dividend(polygon_env, warehouse_url, instance)
    from market_pipeline.warehouse.views_log import ViewsLog

    log = ViewsLog(warehouse_url)
    assert set(log.charts(["AAPL", "BTCUSD"])) == {"AAPL", "BTCUSD"}
    outcomes = {(o.symbol, o.check_name): o for o in log.outcomes(["AAPL"])}
    assert outcomes[("AAPL", "unexplained_returns")].passed and outcomes[("AAPL", "split_consistency")].passed
