"""How a suite test reads in Allure: titled by its feature, filed under profile > feature.

Labels are set as pytest markers at collection (allure-pytest turns `allure_label` markers into
labels at teardown), and the title on the test function, as @allure.title does: allure-pytest
names a test after setup from the function's title (allure_pytest/listener.py
pytest_runtest_setup), so a title set by a fixture would be overwritten, and a test whose setup
failed (a target that never came up) would have none.

The tree: Allure 2's Suites tab and Allure 3's tree (groupBy parentSuite, suite: the config
allure_results writes) read parentSuite > suite = profile > feature; Allure 2's Behaviors tab
reads epic > feature, the same two names. allure-pytest adds its own parentSuite and suite
(from the Python package and module) only where a test has none.
"""

import allure
import pytest

from conformance.features import Feature, Level

def title(feature: Feature) -> str:
    return f"{feature.name}: {feature.covers}"


def label(item: pytest.Item, feature: Feature) -> None:
    """Title and labels of one suite test, at collection."""
    for marker in (allure.parent_suite(feature.profile), allure.suite(feature.name),
                   allure.epic(feature.profile), allure.feature(feature.name),
                   allure.severity(allure.severity_level.CRITICAL if feature.level is Level.CORE
                                   else allure.severity_level.NORMAL)):
        if isinstance(marker, pytest.MarkDecorator):  # not so when allure-pytest is disabled
            item.add_marker(marker)
    function = getattr(item, "function", None)
    if function is not None:
        allure.title(title(feature))(function)
