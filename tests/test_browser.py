"""The storefront page in a real browser (headless Chromium via Selenium)."""

from __future__ import annotations

import os
import shutil

import pytest
from django.core.files.base import ContentFile

from demo_shop.catalog.demo_data import generate_catalog
from demo_shop.catalog.models import Category, Product

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver")
        pytest.skip(
            "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def _save(items):
    """Demo catalog items as products with their images (indexed on commit)."""
    items = list(items)
    for item in items:
        category, _ = Category.objects.get_or_create(
            name=item["category"]["name"],
            defaults={
                "slug": item["category"]["slug"],
                "translations": item["category"]["translations"],
            },
        )
        product = Product(category=category, **item["product"])
        product.image.save(f"{product.sku}.png", ContentFile(item["image"]), save=False)
        product.save()
    return items


@pytest.fixture
def drawn_catalog():
    return _save(list(generate_catalog())[::8])  # 30 products over every category


def test_text_search_in_the_browser(browser, live_server, drawn_catalog, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{live_server.url}/search/")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("rotes Kleid", Keys.ENTER)
    cards = browser.find_elements(By.CSS_SELECTOR, "#ss-results .ss-card")
    assert len(cards) == 24
    names = {p.name for p in Product.objects.all()}
    assert cards[0].find_element(By.CLASS_NAME, "ss-name").text in names
    image = cards[0].find_element(By.TAG_NAME, "img")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(  # the product photo is served and decoded
        lambda b: b.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        )
    )
    chips = browser.find_elements(By.CSS_SELECTOR, ".ss-chip")
    assert len(chips) == 5  # "All" and four categories
    chips[1].click()
    category = chips and browser.find_element(By.CSS_SELECTOR, ".ss-chip.active").text
    shown = [
        c.find_element(By.CLASS_NAME, "ss-name").text
        for c in browser.find_elements(By.CSS_SELECTOR, "#ss-results .ss-card")
    ]
    in_category = set(
        Product.objects.filter(category__name=category).values_list("name", flat=True)
    )
    assert shown and set(shown) <= in_category
    browser.save_screenshot(str(tmp_path / "text.png"))


def _look_photo_rects(browser):
    """The displayed photo's rect and each box's rect and inline percentages."""
    return browser.execute_script(
        """
        var photo = document.querySelector("#ss-look-photo img");
        if (!photo) return {loaded: false};
        var rect = function (el) {
          var r = el.getBoundingClientRect();
          return {x: r.left, y: r.top, width: r.width, height: r.height};
        };
        return {
          loaded: photo.complete && photo.naturalWidth > 0,
          photo: rect(photo),
          boxes: Array.from(document.querySelectorAll("#ss-look-photo .ss-box")).map(
            function (box) {
              return {
                rect: rect(box),
                left: parseFloat(box.style.left),
                top: parseFloat(box.style.top),
              };
            }
          ),
        };
        """
    )


def _assert_boxes_on_the_photo(browser):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda b: _look_photo_rects(b)["loaded"])
    found = _look_photo_rects(browser)
    photo, boxes = found["photo"], found["boxes"]
    assert boxes and photo["width"] > 100 and photo["height"] > 50
    for box in boxes:
        r = box["rect"]
        assert r["width"] > 0 and r["height"] > 0
        assert photo["x"] - 1 <= r["x"], (photo, box)
        assert photo["y"] - 1 <= r["y"], (photo, box)
        assert r["x"] + r["width"] <= photo["x"] + photo["width"] + 1, (photo, box)
        assert r["y"] + r["height"] <= photo["y"] + photo["height"] + 1, (photo, box)
    first = boxes[0]
    expected_x = photo["x"] + first["left"] / 100 * photo["width"]
    expected_y = photo["y"] + first["top"] / 100 * photo["height"]
    assert abs(first["rect"]["x"] - expected_x) <= 1, (photo, first)
    assert abs(first["rect"]["y"] - expected_y) <= 1, (photo, first)
    return found


def _landscape(image: bytes) -> bytes:
    """The drawn product on a wide canvas: a photo that is not square."""
    import io

    from PIL import Image

    product = Image.open(io.BytesIO(image)).convert("RGB")
    canvas = Image.new("RGB", (product.width * 2, product.height), "white")
    canvas.paste(product, (product.width // 2, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("shape", ["square", "landscape"])
def test_photo_search_and_shop_the_look_in_the_browser(
    browser, live_server, settings, drawn_catalog, tmp_path, shape
):
    from selenium.webdriver.common.by import By

    # With random tiny models only the thresholds decide what counts as an item.
    settings.SHOP_SEARCH = {
        **settings.SHOP_SEARCH,
        "DETECTION_MIN_SCORE": 0.0,
        "DETECTION_BACKGROUND_PROMPTS": [],
    }
    image = drawn_catalog[3]["image"]
    photo = tmp_path / ("outfit.png" if shape == "square" else "outfit.jpg")
    photo.write_bytes(image if shape == "square" else _landscape(image))
    browser.set_window_size(1280, 1000)
    browser.get(f"{live_server.url}/search/")
    browser.find_element(By.ID, "ss-file").send_keys(str(photo))
    assert browser.find_element(By.ID, "ss-preview").is_displayed()
    browser.find_element(By.NAME, "look").click()
    browser.find_element(By.CSS_SELECTOR, "#ss-photo-form button").click()
    boxes = browser.find_elements(By.CSS_SELECTOR, "#ss-look-photo .ss-box")
    assert boxes
    # The boxes sit on the photo at any window size, the narrow one included
    # (where the photo's column shrinks and the products go below it).
    for size in [(1280, 1000), (600, 900), (420, 800), (1000, 700)]:
        browser.set_window_size(*size)
        _assert_boxes_on_the_photo(browser)
        browser.save_screenshot(str(tmp_path / f"look-{size[0]}.png"))
    items = browser.find_elements(By.CSS_SELECTOR, ".ss-item")
    assert len(items) == len(boxes)
    assert items[0].find_elements(By.CSS_SELECTOR, ".ss-card")
    if shape == "square":
        whole = browser.find_elements(By.CSS_SELECTOR, "#ss-results .ss-card")
        assert (
            whole[0].find_element(By.CLASS_NAME, "ss-name").text
            == (drawn_catalog[3]["product"]["name"])
        )  # its own image comes first
    # A fresh page at the small size lays the photo out from the start.
    browser.get(f"{live_server.url}/search/")
    browser.find_element(By.ID, "ss-file").send_keys(str(photo))
    browser.find_element(By.NAME, "look").click()
    browser.find_element(By.CSS_SELECTOR, "#ss-photo-form button").click()
    _assert_boxes_on_the_photo(browser)


@pytest.fixture
def checked_catalog():
    """The demo's checked and dotted products of four categories."""
    kept = {"T-shirts", "Sneakers", "Hats", "Dresses"}
    return _save(
        item
        for item in generate_catalog()
        if item["category"]["name"] in kept
        and any(word in item["product"]["name"] for word in ("checked", "dotted"))
    )


def test_suggestions_as_you_type_with_the_keyboard(
    browser, live_server, checked_catalog, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1280, 1000)
    browser.get(f"{live_server.url}/search/")
    box = browser.find_element(By.ID, "ss-q")
    listbox = browser.find_element(By.ID, "ss-suggestions")
    box.send_keys("Black che")
    WebDriverWait(browser, 10).until(lambda b: listbox.is_displayed())
    options = listbox.find_elements(By.CSS_SELECTOR, "[role=option]")
    texts = [o.text for o in options]
    assert texts and all(t.startswith("Black checked") for t in texts)
    assert box.get_attribute("aria-expanded") == "true"
    browser.save_screenshot(str(tmp_path / "suggest.png"))
    # Arrow keys move through the list (wrapping), Escape closes it.
    box.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_UP)
    assert box.get_attribute("aria-activedescendant") == options[0].get_attribute("id")
    assert "active" in options[0].get_attribute("class")
    box.send_keys(Keys.ESCAPE)
    assert not listbox.is_displayed() and box.get_attribute("value") == "Black che"
    assert box.get_attribute("aria-expanded") == "false"
    # Typing opens it again; Enter on an option searches for it.
    box.send_keys("c")
    WebDriverWait(browser, 10).until(lambda b: listbox.is_displayed())
    chosen = listbox.find_elements(By.CSS_SELECTOR, "[role=option]")[0].text
    box.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "q=" in b.current_url)
    box = browser.find_element(By.ID, "ss-q")
    assert box.get_attribute("value") == chosen
    first = browser.find_element(By.CSS_SELECTOR, "#ss-results .ss-card .ss-name")
    assert first.text == chosen
    marked = [m.text for m in first.find_elements(By.TAG_NAME, "mark")]
    assert marked == chosen.split()[: len(marked)] and len(marked) >= 2
    # A category offered for a prefix of its translated name.
    box.clear()
    box.send_keys("Kle")
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#ss-suggestions [data-category]")
    )
    browser.find_element(By.CSS_SELECTOR, "#ss-suggestions [data-category]").click()
    WebDriverWait(browser, 10).until(lambda b: "category=" in b.current_url)
    active = browser.find_element(By.CSS_SELECTOR, ".ss-chip.active")
    assert active.text == "Dresses"


def test_count_and_sort_in_the_browser(browser, live_server, checked_catalog, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.set_window_size(1280, 1000)
    browser.get(f"{live_server.url}/search/?q=checked")
    checked = Product.objects.filter(name__contains="checked")
    count = browser.find_element(By.ID, "ss-count").text
    assert count == f"{checked.count()} products"
    assert not browser.find_element(By.ID, "ss-sort-apply").is_displayed()
    Select(browser.find_element(By.ID, "ss-sort")).select_by_visible_text(
        "Price: high to low"
    )
    WebDriverWait(browser, 10).until(lambda b: "sort=-price" in b.current_url)
    names = [
        e.text for e in browser.find_elements(By.CSS_SELECTOR, "#ss-results .ss-name")
    ]
    assert names == [p.name for p in checked.order_by("-price", "pk")]
    assert browser.find_element(By.ID, "ss-count").text == count
    browser.save_screenshot(str(tmp_path / "sorted.png"))
