"""Dashboard pages below the browser (the clicking is in test_dashboard_browser.py): the admin
group's view of everyone's jobs, and the nodes page against the API's own numbers."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script
from tests.service.browser import session_client
from tests.service.conftest import munge_header, start_service, stop_service


def test_the_admin_group_sees_and_opens_every_users_jobs(sandbox: Sandbox, jobs: Jobs, tmp_path: Path) -> None:
    job_id = jobs.sbatch("skbalice", job_script(body="echo for the admin"), name="admin-view.sh")
    assert jobs.wait_done(job_id)[0] == "COMPLETED"
    tmp_path.chmod(0o755)
    admin = start_service(sandbox, tmp_path, admin_group="skbbob")
    try:
        with session_client(admin.url, "skbbob") as bob:
            listing = bob.get("/dashboard/", params={"fragment": 1}).text
            assert f'id="job-{job_id}"' in listing and "<th>User</th>" in listing
            row = listing.split(f'id="job-{job_id}"', 1)[1].split("</tr>", 1)[0]
            assert "skbalice" in row and "admin-view.sh" in row
            page = bob.get(f"/dashboard/jobs/{job_id}")
            assert page.status_code == 200 and "skbalice" in page.text and "badge admin" in page.text
        with session_client(admin.url, "skbalice") as alice:  # not in the group: her own jobs only
            assert "<th>User</th>" not in alice.get("/dashboard/", params={"fragment": 1}).text
            assert alice.get(f"/dashboard/jobs/{job_id}").status_code == 200
    finally:
        stop_service(admin)


def test_the_nodes_page_shows_gpus_by_type_as_the_api_counts_them(sandbox: Sandbox, users: object, tmp_path: Path) -> None:
    import httpx

    tmp_path.chmod(0o755)
    service = start_service(sandbox, tmp_path)
    try:
        api_nodes = httpx.get(f"{service.url}/api/v1/nodes", headers=munge_header("skbalice"), timeout=30).json()["nodes"]
        totals: dict[str, list[int]] = {}
        for node in api_nodes:
            for kind, gpu in node["gpus"].items():
                entry = totals.setdefault(kind, [0, 0])
                entry[0] += gpu["free"]
                entry[1] += gpu["total"]
        assert totals, api_nodes
        with session_client(service.url, "skbalice") as alice:
            page = alice.get("/dashboard/nodes").text
        table = page.split('id="gpu-types"', 1)[1].split("</table>", 1)[0]
        for kind, (free, total) in totals.items():
            assert f"<td>{kind}</td>" in table and f"{free} / {total}" in table, (kind, table)
        for node in api_nodes:
            assert f"<td>{node['name']}</td>" in page
    finally:
        stop_service(service)
