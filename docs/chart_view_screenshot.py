"""The README's screenshot of MLflow's chart view: accuracy against budget over a search's trials.

Drives MLflow's UI the way a person would (Playwright with the system's Chromium; not a project dependency):

    pip install playwright                     # in any environment
    peft-search ui NAME --port 5081 &          # a recorded search
    python docs/chart_view_screenshot.py "URL peft-search printed" docs/mlflow_chart_view.png
"""

import sys

from playwright.sync_api import sync_playwright


def main(url: str, out: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.goto(url + "&compareRunsMode=CHART")
        page.wait_for_timeout(8000)
        page.get_by_test_id("experiment-view-runs-visibility-column-header").click()  # charts show 10 runs by default
        page.get_by_role("menuitemradio", name="Show all runs").click()
        page.get_by_test_id("experiment-view-compare-runs-add-chart").first.click()
        page.get_by_test_id("experiment-view-compare-runs-chart-type-scatter").click()
        page.wait_for_timeout(1500)
        page.locator("[role=dialog] .du-bois-light-select-selector").first.click()  # X axis: the metric `budget`
        page.keyboard.type("budget")
        page.wait_for_timeout(800)
        page.keyboard.press("Enter")
        page.get_by_test_id("experiment-view-compare-runs-chart-modal-confirm").click()
        page.wait_for_timeout(3000)
        chart = page.get_by_text("budget vs. accuracy").locator("xpath=ancestor::div[.//button][1]")
        chart.locator("button").first.click()  # the chart's full-screen view
        page.wait_for_timeout(2500)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
