"""vCenter's datastore file service, /folder/<path>?dcPath=&dsName=: for logged-in sessions."""

from __future__ import annotations

from tests.support.fixtures import mounted_copy
from tests.support.vsphere_steps import datastore_file_url, session_cookie


def test_reading_and_writing_files_needs_a_session_cookie(lab, si, http):
    url = datastore_file_url(lab, "ds-nfs-01", "file-01/file-01.vmx")
    assert http.get(url, timeout=30).status_code == 401
    bad = {"Cookie": 'vmware_soap_session="0000000000000000000000000000000000000000"'}
    assert http.get(url, headers=bad, timeout=30).status_code == 401
    cookie = {"Cookie": session_cookie(si)}
    assert cookie["Cookie"].startswith("vmware_soap_session=")
    r = http.get(url, headers=cookie, timeout=30)
    assert r.status_code == 200 and 'displayName = "file-01"' in r.text


def test_writing_a_file_needs_a_session_and_lands_on_the_datastore(lab, si, http):
    with mounted_copy(si, lab, "ds-nfs-01") as mc:
        url = datastore_file_url(lab, mc.ds.name, "file-01/notes.txt")
        assert http.put(url, data=b"anonymous\n", timeout=30).status_code == 401
        cookie = {"Cookie": session_cookie(si)}
        assert http.get(url, headers=cookie, timeout=30).status_code == 404  # nothing written
        r = http.put(url, data=b"restored by a test\n", headers=cookie, timeout=30)
        assert r.status_code in (200, 201)
        assert http.get(url, headers=cookie, timeout=30).text == "restored by a test\n"


def test_an_inaccessible_datastore_answers_404(lab, si, http, vclab):
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=1) as mc:
        url = datastore_file_url(lab, mc.ds.name, "jump-01/jump-01.vmx")
        cookie = {"Cookie": session_cookie(si)}
        assert http.get(url, headers=cookie, timeout=30).status_code == 200
        cfg = next(h for h in lab["hosts"] if h["name"] == mc.esx.name)
        mc.ops.unpresent(mc.copy)  # all paths down
        try:
            assert http.get(url, headers=cookie, timeout=30).status_code == 404
            put = http.put(url, data=b"x", headers=cookie, timeout=30)
            assert put.status_code == 404
        finally:
            mc.ops.present(mc.copy, cfg, "iscsi")
        assert http.get(url, headers=cookie, timeout=30).status_code == 200
