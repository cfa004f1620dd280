// Drives the web console in real Chromium (Debian's, through playwright-core) the way a person
// uses it, against a server, agent and target that crates/periscope/tests/console.rs started.
// Prints one JSON object of what it saw; the Rust test asserts on it and on the API.
// Env: URL, ADMIN, VIEWER (tokens), INSTANCE, FILE, LINE, SHOTS (screenshot dir), CHROMIUM.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing env ${k}`);
  return v;
};
const [url, admin, viewer, instance, file, line, shots] = ["URL", "ADMIN", "VIEWER", "INSTANCE", "FILE", "LINE", "SHOTS"].map(env);
mkdirSync(shots, { recursive: true });
const seen = {};
const T = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
});
// Asks the Rust side to do something (restart the server) and waits until it is done.
const input = (await import("node:readline")).createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function handOff(what) {
  process.stdout.write(`${what}\n`);
  const { value } = await lines.next();
  if (value !== "DONE") throw new Error(`expected DONE after ${what}, got ${value}`);
}
const pages = [];
const shot = async (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: false });

async function signIn(page, token) {
  await page.goto(url);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Instances" }).waitFor({ timeout: T });
}

async function openLine(page) {
  await page.goto(`${url}/#/instance/${encodeURIComponent(instance)}`);
  await page.getByLabel("File").fill(file);
  await page.getByRole("button", { name: "Open" }).click();
  const row = page.locator(`[data-line="${line}"]`);
  await row.waitFor({ timeout: T });
  await row.click();
  await page.locator("#probe-form").waitFor({ timeout: T });
}

async function addProbe(page, kind, fill) {
  await openLine(page);
  await page.getByLabel("Kind").selectOption(kind);
  await fill();
  await page.getByRole("button", { name: "Add probe" }).click();
  await page.waitForURL(/#\/events\/p\d+/, { timeout: T });
  return decodeURIComponent(page.url().split("/").pop());
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  pages.push(page);
  page.on("pageerror", (e) => (seen.page_errors = [...(seen.page_errors || []), String(e)]));

  // A wrong token says so.
  await page.goto(url);
  await page.getByLabel("Token").fill("psk_not_a_token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#sign-in-error:not(:empty)").waitFor({ timeout: T });
  seen.wrong_token = await page.locator("#sign-in-error").textContent();
  seen.nav_shown_signed_out = await page.getByRole("link", { name: "Instances" }).isVisible();
  await shot(page, "01-wrong-token");

  // Sign in; the instance is listed; the tag filter narrows the list.
  await signIn(page, admin);
  await page.locator(`tr[data-instance="${instance}"]`).waitFor({ timeout: T });
  seen.instance_row = await page.locator(`tr[data-instance="${instance}"]`).innerText();
  await page.getByLabel("Filter by tag").fill("service=console-test");
  seen.filtered_rows = await page.locator("tr[data-instance]").count();
  await page.getByLabel("Filter by tag").fill("service=nothing-like-this");
  seen.filtered_out_rows = await page.locator("tr[data-instance]").count();
  await page.getByLabel("Filter by tag").fill("");
  await shot(page, "02-instances");

  // Open the code, click a line: the form. A name not in scope is shown inline before
  // anything is placed, with the names that are.
  await openLine(page);
  seen.instrumentable_lines = await page.locator("[data-line]").count();
  await shot(page, "03-source");
  await page.getByLabel("Template").fill("id={req.id} oops={nope}");
  await page.locator("#template-error:not([hidden])").waitFor({ timeout: T });
  seen.template_error = await page.locator("#template-error").textContent();
  await page.getByLabel("Condition").fill("req.id >");
  await page.locator("#condition-error:not([hidden])").waitFor({ timeout: T });
  seen.condition_error = await page.locator("#condition-error").textContent();
  await shot(page, "04-inline-error");
  seen.probes_before_add = (await (await fetch(`${url}/api/v1/probes`, { headers: { Authorization: `Bearer ${admin}` } })).json()).probes.length;

  // A log probe: its events arrive with the right values.
  const logProbe = await addProbe(page, "log", async () => {
    await page.getByLabel("Template").fill("id={req.id} path={req.path}");
    await page.getByLabel("Condition").fill("");
    // Events must keep coming through a server restart, even on a loaded machine.
    await page.getByLabel("Overhead budget (ms per 10 s)").fill("10000");
  });
  seen.log_probe = logProbe;
  const firstLog = page.locator('.event[data-kind="log"]').first();
  await firstLog.waitFor({ timeout: T });
  seen.log_messages = await page.locator('.event[data-kind="log"] .msg').allTextContents();
  await shot(page, "05-log-events");

  // The server restarts under the open stream: the page reconnects and resumes after the last
  // event it showed, with nothing twice.
  const seqs = async () => (await page.locator(".event[data-seq]").evaluateAll((es) => es.map((e) => Number(e.dataset.seq))));
  await handOff("RESTART");
  // Connected a second time, to the new server; then events keep coming after that.
  await page.locator('#stream-state[data-connects="2"]').waitFor({ timeout: 60_000 });
  const before = Math.max(...(await seqs()));
  await page.waitForFunction((b) => [...document.querySelectorAll(".event[data-seq]")].some((e) => Number(e.dataset.seq) > b), before, { timeout: 60_000 });
  const after = await seqs();
  seen.resumed_after_restart = after.some((x) => x > before);
  seen.stream_state = await page.locator("#stream-state").textContent();
  seen.duplicate_events = after.length - new Set(after).size;
  await shot(page, "05b-resumed-after-restart");

  // A snapshot: open it as a tree and read a variable.
  const snapProbe = await addProbe(page, "snapshot", async () => {});
  seen.snapshot_probe = snapProbe;
  const snap = page.locator('.event[data-kind="snapshot"]').first();
  await snap.waitFor({ timeout: T });
  await snap.locator("summary").first().click();
  const req = snap.locator('details.frame [data-var="req"]').first();
  await req.locator("summary").first().click();
  // `req` is a reference: it opens onto the struct's fields.
  const id = snap.locator('[data-var="id"]').first();
  await id.waitFor({ timeout: T });
  seen.snapshot_id_text = await id.innerText();
  const path = snap.locator('[data-var="path"]').first();
  seen.snapshot_path_text = await path.innerText();
  await shot(page, "06-snapshot-tree");

  // A counter grouped by enum variant, charted live.
  const countProbe = await addProbe(page, "count", async () => {
    await page.getByLabel("Group by").fill("req.method");
  });
  seen.count_probe = countProbe;
  await page.locator('.event[data-kind="count"]').first().waitFor({ timeout: T });
  await page.locator(".chart").first().waitFor({ timeout: T });
  seen.count_text = await page.locator('.event[data-kind="count"] .msg').first().textContent();
  await shot(page, "07-counter-chart");

  // A verify probe: its table of candidates, filled by the server's tallies. (In the
  // service sample, `req.id % 10 == 3` is the "failure" and `next` moves every id on by one.)
  const verifyProbe = await addProbe(page, "verify", async () => {
    await page.getByLabel("Failure").fill("req.id % 10 == 3");
    await page.getByLabel("Fixes").fill("next: req.id = req.id + 1");
    // Replay mode takes FROM..UNTIL; anything else is said under the field as it is typed.
    await page.getByLabel("Replay").fill("nope");
    await page.locator("#replay-error:not([hidden])").waitFor({ timeout: T });
    seen.replay_error = await page.locator("#replay-error").textContent();
    await shot(page, "07a-verify-replay-error");
    await page.getByLabel("Replay").fill("");
    await page.getByLabel("Max hits").fill("200");
  });
  seen.verify_probe = verifyProbe;
  const row = page.locator('#verify-table tr[data-candidate="next"]');
  await row.waitFor({ timeout: T });
  await page.waitForFunction(() => Number(document.querySelector('#verify-table [data-cell="fixed"]')?.textContent) > 0, null, { timeout: 60_000 });
  seen.verify_row = await row.innerText();
  seen.verify_fixed = Number(await row.locator('[data-cell="fixed"]').textContent());
  seen.verify_failing = Number(await row.locator('[data-cell="failing"]').textContent());
  await shot(page, "07b-verify-table");

  // A probe its overhead budget pauses says so on the Probes page, and Resume puts it back.
  const pausedProbe = await addProbe(page, "log", async () => {
    await page.getByLabel("Template").fill("id={req.id}");
    await page.getByLabel("Overhead budget (ms per 10 s)").fill("1");
  });
  seen.paused_probe = pausedProbe;
  await page.getByRole("link", { name: "Probes" }).click();
  const pausedRow = page.locator(`tr[data-probe="${pausedProbe}"]`);
  for (let i = 0; i < 60 && !(await pausedRow.locator(".state-paused").count()); i++) {
    await page.waitForTimeout(500);
    await page.getByRole("link", { name: "Probes" }).click();
    await page.reload();
  }
  seen.paused_row = await pausedRow.innerText();
  await shot(page, "07c-paused");
  await page.locator(`button[data-resume="${pausedProbe}"]`).click();
  await page.locator(`tr[data-probe="${pausedProbe}"]`).waitFor({ timeout: T });
  seen.resumed = (await (await fetch(`${url}/api/v1/probes/${pausedProbe}`, { headers: { Authorization: `Bearer ${admin}` } })).json()).probe.resumes;

  // A viewer sees everything and can change nothing.
  const vctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const vpage = await vctx.newPage();
  pages.push(vpage);
  await signIn(vpage, viewer);
  seen.viewer_audit_link = await vpage.getByRole("link", { name: "Audit" }).count();
  await openLine(vpage);
  const vadd = vpage.getByRole("button", { name: "Add probe" });
  seen.viewer_add_disabled = await vadd.isDisabled();
  seen.viewer_add_title = await vadd.getAttribute("title");
  await shot(vpage, "08-viewer-form");
  await vpage.getByRole("link", { name: "Probes" }).click();
  await vpage.locator(`tr[data-probe="${logProbe}"]`).waitFor({ timeout: T });
  seen.viewer_remove_disabled = await vpage.locator(`button[data-remove="${logProbe}"]`).isDisabled();
  await shot(vpage, "09-viewer-probes");
  await vctx.close();

  // Remove the probes from the Probes page.
  await page.getByRole("link", { name: "Probes" }).click();
  for (const p of [logProbe, snapProbe, countProbe, verifyProbe, pausedProbe]) {
    await page.locator(`button[data-remove="${p}"]`).click();
    await page.locator(`tr[data-probe="${p}"] .state-removed`).first().waitFor({ timeout: T });
  }
  seen.log_probe_row = await page.locator(`tr[data-probe="${logProbe}"]`).innerText();
  await shot(page, "10-probes-removed");

  // The changes are in the audit, made via the web.
  await page.getByRole("link", { name: "Audit" }).click();
  await page.locator("tr[data-audit]").first().waitFor({ timeout: T });
  seen.audit_rows = await page.locator("tr[data-audit]").allInnerTexts();
  await shot(page, "11-audit");
  seen.ok = true;
} catch (e) {
  seen.ok = false;
  seen.failure = String(e && e.stack ? e.stack : e);
  // What each page showed when it failed.
  for (const [i, p] of pages.entries()) await shot(p, `failure-${i}`).catch(() => {});
} finally {
  await browser.close();
  input.close();
  process.stdout.write(JSON.stringify(seen) + "\n");
}
