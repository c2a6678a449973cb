"""Headless Chromium on the patient pages, the tag viewer, changing a study and anonymising
it, against the real `serve` process (its jobs run in its own threads, as in production)."""

from __future__ import annotations

import pytest

from tests.browser.test_portal_browser import CHROMIUM_ARGS
from tests.portal_process import start_portal
from tests.screens import shot

pytestmark = [pytest.mark.browser, pytest.mark.interop]

ROOT = "1.2.826.0.1.3680043.8.498.4026"
STORE = f"""
ROOT = "{ROOT}"
from pydicom import dcmread
from pacs.services.ingest import store_instance
from tests.samples import encoded, sample
for pid, study in (("PB-1", "1"), ("PB-2", "2")):
    for n in (1, 2):
        ds = dcmread(sample("CT_small.dcm"))
        ds.PatientID, ds.PatientName, ds.PatientBirthDate = pid, "TWICE^TOM", "19600505"
        ds.StudyInstanceUID = ROOT + "." + study
        ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
        ds.SOPInstanceUID = ds.SeriesInstanceUID + "." + str(n)
        ds.StudyDescription = "CHEST " + study
        store_instance(data=encoded(ds), received_from="test")
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    p = start_portal(tmp_path_factory.mktemp("patients") / "var",
                     DJANGO_SUPERUSER_USERNAME="chief", DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!")
    p.shell(STORE)
    yield p
    p.stop()


@pytest.fixture
def page(portal):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        pg = browser.new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.goto(f"{portal.url}/login/")
        pg.fill("input[name=username]", "chief")
        pg.fill("input[name=password]", "Xr4y-s3cret!")
        pg.click("button[type=submit]")
        pg.wait_for_selector("h1:has-text('Dashboard')")
        pg.console_errors = errors
        yield pg
        assert errors == []
        browser.close()


def _wait_for_job(page) -> None:
    """On a job page (it reloads itself while the job runs): until it is done."""
    page.wait_for_selector("#job-state:has-text('done')", timeout=30000)


def test_duplicates_merge_unmerge_and_edit(page, portal, tmp_path):
    page.click("header >> text=Patients")
    rows = page.locator("#patient-table tbody tr")
    assert rows.count() == 2
    assert all("Possible duplicate" in rows.nth(i).inner_text() for i in range(2))
    page.locator("#patient-table tr:has-text('PB-1') a").click()
    assert "Possibly the same person" in page.inner_text("#duplicates")
    # merge PB-2 into PB-1, as an ADT^A40 would
    page.fill("input[name=prior_patient_id]", "PB-2")
    page.check("input[name=confirm]")
    page.click("#merge-form button")
    assert "Merged patient PB-2" in page.inner_text(".messages")
    assert page.locator("#patient-studies tbody tr").count() == 2
    assert "merged" in page.inner_text("#patient-history")
    shot(page, "patient-merged", tmp_path)
    # and undone: PB-2 is back with its own study
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#patient-merges button:has-text('Unmerge')")
    assert "Unmerged" in page.inner_text(".messages")
    assert "PB-2" in page.inner_text("#patient-facts")
    assert page.locator("#patient-studies tbody tr").count() == 1
    # edit the demographics: the registry at once, the stored headers by a job
    page.click("#edit-patient")
    page.fill("input[name=family_name]", "Twice")
    page.fill("input[name=given_name]", "Thomas")
    page.click("#patient-edit-form button:has-text('Save')")
    assert "Saved" in page.inner_text(".messages")
    assert page.inner_text("h1") == "TWICE^THOMAS"
    page.click("#rewrite-jobs a")
    _wait_for_job(page)
    # the tag viewer reads the rewritten header
    page.goto(f"{portal.url}/instances/{ROOT}.2.1.1/tags/")
    tree = page.inner_text("#tag-tree")
    assert "(0010,0010) PN Patient's Name: TWICE^THOMAS" in tree
    assert "(0010,0020) LO Patient ID: PB-2" in tree
    shot(page, "tag-viewer", tmp_path, full_page=False)


def test_change_a_study_and_anonymise_it(page, portal, tmp_path):
    page.goto(f"{portal.url}/studies/{ROOT}.1/")
    page.click("#modify-study")
    page.fill("input[name=StudyDescription]", "CHEST PA")
    page.click("#modify-form button:has-text('Save')")
    assert "Saved" in page.inner_text(".messages")
    assert page.inner_text("h1") == "CHEST PA"
    page.fill("#anonymize-form input[name=patient_id]", "ANON-B1")
    page.check("#anonymize-form input[name=keep_descriptions]")
    page.click("#anonymize-form button")
    _wait_for_job(page)
    page.click("#job-result a")
    assert page.inner_text("h1") == "CHEST PA"  # descriptions kept, as ticked
    facts = page.inner_text(".facts")
    assert "ANONYMOUS" in facts and "ANON-B1" in facts and "TWICE" not in facts
    shot(page, "anonymised-study", tmp_path)


def test_upload_files_and_a_folder(page, portal, tmp_path):
    from pydicom import dcmread

    from tests.samples import encoded, sample

    folder = tmp_path / "cd" / "DICOM"
    folder.mkdir(parents=True)
    for n in (1, 2):
        ds = dcmread(sample("MR_small.dcm"))
        ds.PatientID, ds.StudyInstanceUID = "UP-1", f"{ROOT}.77"
        ds.SOPInstanceUID = f"{ROOT}.77.1.{n}"
        (folder / f"IM{n}").write_bytes(encoded(ds))
    (tmp_path / "cd" / "DICOMDIR").write_bytes(b"not read")
    (tmp_path / "notes.txt").write_text("not an image")
    page.click("header >> text=Upload")
    page.set_input_files("#pick-files", [str(tmp_path / "notes.txt"), str(folder / "IM1")])
    page.wait_for_selector("#upload-summary:has-text('2 of 2 done')")
    results = page.inner_text("#upload-results")
    assert "IM1\tstored" in results and "notes.txt\trefused" in results
    page.set_input_files("#pick-folder", str(tmp_path / "cd"))
    page.wait_for_selector("#upload-summary:has-text('5 of 5 done')")
    summary = page.inner_text("#upload-summary")
    assert "3 stored" in summary and "1 refused" in summary and "1 skipped" in summary
    shot(page, "upload", tmp_path)
    # Chromium logs each non-2xx fetch; the refused file's 409 (STOW-RS: every instance of
    # the request failed) is the one expected, and the page said why
    refused = [e for e in page.console_errors if "409 (Conflict)" in e]
    assert len(refused) == 1
    page.console_errors[:] = [e for e in page.console_errors if e not in refused]
    page.locator("#upload-results tr.upload-stored a").first.click()
    assert "UP-1" in page.inner_text(".facts")


def test_study_list_search_select_and_download(page, portal, tmp_path):
    page.click("header >> text=Studies")
    page.fill("input[name=patient_name]", "twice")
    page.click("#study-search button:has-text('Search')")
    rows = page.locator("table.studies tbody tr")
    assert rows.count() >= 2
    page.check("#select-all")
    shot(page, "study-list-selection", tmp_path)
    assert page.inner_text("#selected-count") == f"Selected: {rows.count()}"
    with page.expect_download() as got:
        page.click("button[value=zip]")
    path = got.value.path()
    import zipfile

    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) >= 4
    page.click("a.sort:has-text('Patient ID')")
    ids = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
    assert ids == sorted(ids)


NARROW_PAGES = ["/", "/studies/", "/patients/", "/upload/", "/worklist/", "/jobs/",
                "/worklist/orders/new/", "/aes/", "/hl7/", "/audit/", "/password/",
                f"/studies/{ROOT}.1/", f"/studies/{ROOT}.1/modify/", "/forwarding/",
                "/forwarding/queue/", "/hl7/traffic/", "/worklist/?view=week"]


def test_a_phone_width_every_field_labelled(portal, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 390, "height": 844})
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(f"{pg.url}: {m.text}")
              if m.type == "error" else None)
        pg.goto(f"{portal.url}/login/")
        pg.fill("input[name=username]", "chief")
        pg.fill("input[name=password]", "Xr4y-s3cret!")
        pg.click("button[type=submit]")
        assert not pg.locator("#main-nav").is_visible()  # behind the Menu button
        pg.click("#menu-button")
        pg.click("#main-nav >> text=Patients")
        assert pg.inner_text("h1") == "Patients"
        pg.click("#menu-button")
        shot(pg, "phone-menu", tmp_path, full_page=False)
        unlabelled, wide = [], []
        for path in NARROW_PAGES:
            pg.goto(portal.url + path)
            if pg.evaluate("document.documentElement.scrollWidth") > 390:
                wide.append(path)
            unlabelled += [f"{path}: {name}" for name in pg.evaluate("""() =>
                [...document.querySelectorAll('main input, main select, main textarea')]
                .filter(e => !['hidden', 'submit', 'button'].includes(e.type))
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.name || e.id)""")]
        browser.close()
    assert wide == [] and unlabelled == [] and errors == []


USERS = """
from tests.users import user_with
user_with("vera", "viewer", password="Vera-pass-2026!")
user_with("tom", "technologist", password="Tom-pass-2026!")
"""


def _login_as(browser_page, portal, name: str, password: str) -> None:
    browser_page.goto(f"{portal.url}/login/")
    browser_page.fill("input[name=username]", name)
    browser_page.fill("input[name=password]", password)
    browser_page.click("button[type=submit]")


def test_roles_in_the_pages(portal, tmp_path):
    from playwright.sync_api import sync_playwright

    portal.shell(USERS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page()
            _login_as(pg, portal, "vera", "Vera-pass-2026!")
            pg.goto(f"{portal.url}/studies/{ROOT}.1/")
            # a viewer sees the study, and no button for what a viewer may not do
            for absent in ("#delete-study", ".send-form", "#modify-study", "#anonymize-form"):
                assert pg.locator(absent).count() == 0, absent
            assert pg.locator("#download-study").count() == 1
            assert "Upload" not in pg.inner_text("#main-nav")
            # a page the role may not open: 403 with the reason, not the login form again
            answer = pg.goto(f"{portal.url}/aes/")
            assert answer.status == 403 and "/login/" not in pg.url
            assert "Not allowed" in pg.inner_text("main")
            shot(pg, "forbidden", tmp_path)
            # every user changes their own password
            pg.goto(f"{portal.url}/password/")
            pg.fill("input[name=old_password]", "Vera-pass-2026!")
            pg.fill("input[name=new_password1]", "Vera-new-pass-77!")
            pg.fill("input[name=new_password2]", "Vera-new-pass-77!")
            pg.click("main button[type=submit]")
            assert "changed" in pg.inner_text("main").lower()
            pg.context.clear_cookies()
            _login_as(pg, portal, "vera", "Vera-new-pass-77!")
            pg.wait_for_selector("h1:has-text('Dashboard')")
            # a technologist may send (and upload)
            pg.context.clear_cookies()
            _login_as(pg, portal, "tom", "Tom-pass-2026!")
            pg.goto(f"{portal.url}/studies/{ROOT}.1/")
            assert pg.locator(".send-form").count() >= 1
            assert pg.locator("#delete-study").count() == 0
            assert "Upload" in pg.inner_text("#main-nav")
        finally:
            browser.close()
