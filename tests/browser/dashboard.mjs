// The dashboard in a real browser (headless Chromium driven by playwright-core) against a
// running local runtime that verifies tokens: submit a job from the page and watch it to the end
// without a reload, cancel a running job from the page, replay a finished one with an edited
// payload, see a paused type marked, keep updating with the WebSocket blocked; then the console's
// other views: pause a type from the page, redrive a dead letter and watch it succeed, follow a
// batch's counts live, a job's dependency graph, bulk actions with their progress, schedules,
// tenant limits, API keys, the audit trail, and a reader who is offered nothing it may not do.
// Env: BASE_URL (the runtime), PLAYWRIGHT_DIR (where playwright-core is installed),
// SCREENSHOT_DIR (where the screenshots go), TENANT and OPERATOR_TOKEN, ADMIN_TOKEN,
// READER_TOKEN (JWTs of that tenant; none: the runtime is in dev mode, everyone an operator).
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import http from "node:http";

const require = createRequire(process.env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");
const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR;
const tokens = { operator: process.env.OPERATOR_TOKEN, admin: process.env.ADMIN_TOKEN, reader: process.env.READER_TOKEN };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const text = (page, sel) => page.locator(sel).textContent();
const status = (page) => text(page, "#d-status");
let failed = false;
const taken = [];

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

async function shot(page, name) {
  const path = `${shots}/${name}.png`;
  await page.screenshot({ path, fullPage: true, animations: "disabled" });   // (bars drawn at their width, not mid-way)
  taken.push(path);
}

// The API as a role of the tenant (from this script, not the page).
async function call(method, path, body, role = "operator") {
  const headers = { "content-type": "application/json" };
  if (tokens[role]) headers.authorization = "Bearer " + tokens[role];
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const raw = await r.text();
  return { status: r.status, body: raw ? JSON.parse(raw) : null };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, check, timeout = 20000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}
const jobStatus = async (id) => (await call("GET", `/v1/jobs/${id}`)).body.status;

// A page signed in as `role` (its token in local storage, as the page keeps it), live.
async function openPage(role = "operator", path = "/") {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  if (tokens[role]) await page.addInitScript((t) => localStorage.setItem("conveyor-token", t), tokens[role]);
  await page.goto(base + path);
  await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket", null, { timeout: 20000 });
  await page.evaluate(() => { window.sameDocument = true; });
  return page;
}
const tab = (page, name) => page.click(`#tabs a[data-tab="${name}"]`);

async function submitFromPage(page, type, payload) {
  const before = await text(page, "#submitted");
  await page.selectOption("#type", type);
  await page.fill("#payload", JSON.stringify(payload));
  await page.click("#submit");
  await page.waitForFunction((b) => { const t = document.getElementById("submitted").textContent; return t !== b && t.startsWith("submitted "); }, before);
  return (await text(page, "#submitted")).replace("submitted ", "");
}

// A schedule that fires every minute, made first so it has a run by the time its step looks.
// (Its jobs are not noop: the bulk step counts the queued noop jobs.)
const schedule = await call("POST", "/v1/schedules", { name: "browser-every-minute", type: "sleep", payload: { ms: 10 }, cron: "* * * * *" });
assert.equal(schedule.status, 201, JSON.stringify(schedule.body));

await step("a job submitted from the page shows its progress moving and ends succeeded, without a reload", async () => {
  const page = await openPage();
  const id = await submitFromPage(page, "sleep", { ms: 3000 });
  // The progress bar moves: seen part-way (neither empty nor full) while it runs.
  await page.waitForFunction(() => {
    const w = parseFloat(document.getElementById("d-bar").style.width);
    return w > 0 && w < 100;
  }, null, { timeout: 20000 });
  const midway = await page.evaluate(() => parseFloat(document.getElementById("d-bar").style.width));
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "succeeded", null, { timeout: 30000 });
  assert.equal(await text(page, "#d-id"), id);
  assert.ok(await page.evaluate(() => window.sameDocument === true), "the page was not reloaded");
  assert.equal(await page.evaluate(() => document.getElementById("d-bar").style.width), "100%");
  assert.ok(midway > 0 && midway < 100, `progress was seen part-way (${midway}%)`);
  await shot(page, "dashboard-succeeded");
  await page.close();
});

await step("a running job is cancelled from the page", async () => {
  const page = await openPage();
  await submitFromPage(page, "sleep", { ms: 60000 });
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "running", null, { timeout: 20000 });
  await page.waitForFunction(() => !document.getElementById("d-cancel").disabled);
  await page.click("#d-cancel");
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "cancelled", null, { timeout: 20000 });
  await shot(page, "dashboard-cancelled");
  await page.close();
});

await step("a finished job is replayed from the page with an edited payload, each linking the other", async () => {
  const page = await openPage();
  const id = await submitFromPage(page, "sleep", { ms: 10 });
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "succeeded", null, { timeout: 20000 });
  await page.fill("#d-replay-payload", JSON.stringify({ ms: 20 }));
  await page.click("#d-replay");
  // The new job is shown, naming the old; it runs with the edited payload and succeeds.
  await page.waitForFunction((old) => document.getElementById("d-id").textContent !== old, id, { timeout: 20000 });
  const replay = await text(page, "#d-id");
  assert.match(await text(page, "#d-links"), new RegExp(`replay of ${id}`));
  assert.equal(JSON.parse(await page.inputValue("#d-replay-payload")).ms, 20);
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "succeeded", null, { timeout: 20000 });
  // Back on the old job, it names its replay.
  await page.click(`#d-links a[data-job="${id}"]`);
  await page.waitForFunction((old) => document.getElementById("d-id").textContent === old, id);
  assert.match(await text(page, "#d-links"), new RegExp(`replayed as ${replay}`));
  await shot(page, "dashboard-replayed");
  await page.close();
});

await step("the submit form offers the types a user submits, not the deployment's own", async () => {
  const page = await openPage();
  await page.waitForFunction(() => document.querySelectorAll("#type option").length > 0);
  const offered = await page.$$eval("#type option", (os) => os.map((o) => o.textContent));
  const filter = await page.$$eval("#f-type option", (os) => os.map((o) => o.textContent));
  assert.ok(offered.includes("sleep") && !offered.includes("conveyor.bulk"), offered.join(","));
  assert.ok(filter.includes("conveyor.bulk"), "the history filter still lists it");
  await page.close();
});

await step("a paused type says so in the page's table of types", async () => {
  const page = await openPage();
  assert.equal((await call("POST", "/v1/types/noop/pause")).status, 200);
  try {
    await submitFromPage(page, "noop", {});
    await page.waitForFunction(() => [...document.querySelectorAll("#queues tr")].some((tr) => tr.textContent.startsWith("noop") && tr.textContent.includes("paused")), null, { timeout: 20000 });
    assert.equal(await status(page), "queued");
    await shot(page, "dashboard-paused");
  } finally {
    assert.equal((await call("POST", "/v1/types/noop/resume")).status, 200);
  }
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "succeeded", null, { timeout: 20000 });
  await page.close();
});

await step("with the WebSocket blocked the page keeps updating by its fallback", async () => {
  const page = await browser.newPage();
  // Every WebSocket the page opens is accepted by the browser's side and closed at once: no
  // server ever answers on it.
  await page.routeWebSocket(/\/ws/, (ws) => ws.close());
  if (tokens.operator) await page.addInitScript((t) => localStorage.setItem("conveyor-token", t), tokens.operator);
  await page.goto(base);
  await page.waitForFunction(() => ["events", "polling"].includes(document.getElementById("transport").textContent), null, { timeout: 20000 });
  const transport = await text(page, "#transport");
  // A job submitted elsewhere (not from this page) shows up and reaches succeeded.
  const r = await call("POST", "/v1/jobs", { type: "sleep", payload: { ms: 1500 } });
  assert.equal(r.status, 202);
  const { id } = r.body;
  await page.waitForSelector(`#h-${id}`, { timeout: 20000 });
  await page.waitForFunction((id) => document.querySelector(`#h-${id} .st`)?.textContent === "succeeded", id, { timeout: 30000 });
  assert.ok(["events", "polling"].includes(await text(page, "#transport")), `still on the fallback (${transport})`);
  await shot(page, "dashboard-fallback");
  await page.close();
});

await step("a type paused on the Types view holds its jobs while others run, and runs them once resumed there", async () => {
  const page = await openPage();
  await tab(page, "types");
  const sleepRow = '#types tr[data-type="sleep"]';
  await page.click(`${sleepRow} button.pause`);
  try {
    await page.waitForSelector(`${sleepRow} button.resume`);
    assert.match(await text(page, `${sleepRow} .state`), /paused/);
    await shot(page, "dashboard-types");
    await tab(page, "jobs");
    const sleepId = await submitFromPage(page, "sleep", { ms: 100 });
    const noopId = await submitFromPage(page, "noop", {});
    await page.waitForFunction((id) => document.getElementById("d-id").textContent === id && document.getElementById("d-status").textContent === "succeeded", noopId, { timeout: 20000 });
    // The sleep job waits, queued, for 3 s (the page and the API agree).
    const held = Date.now();
    while (Date.now() - held < 3000) {
      assert.equal(await page.evaluate((id) => document.querySelector(`#h-${id} .st`)?.textContent, sleepId), "queued");
      await sleep(250);
    }
    assert.equal(await jobStatus(sleepId), "queued");
    await tab(page, "types");
    await page.click(`${sleepRow} button.resume`);
    await page.waitForSelector(`${sleepRow} button.pause`);
    await tab(page, "jobs");
    await page.waitForFunction((id) => document.querySelector(`#h-${id} .st`)?.textContent === "succeeded", sleepId, { timeout: 20000 });
    assert.ok(await page.evaluate(() => window.sameDocument === true), "the page was not reloaded");
  } finally {
    await call("POST", "/v1/types/sleep/resume");
  }
  await page.close();
});

// A local server for http.fetch: it fails (500) until it is told to work.
let healthy = false;
const server = http.createServer((req, res) => { res.writeHead(healthy ? 200 : 500, { "content-type": "text/plain" }); res.end(healthy ? "ok" : "down"); });
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const flaky = `http://127.0.0.1:${server.address().port}/`;

await step("a dead letter is redriven from the page and goes on to succeed, live", async () => {
  // GIVEN a fetch with one attempt against a server answering 500: a retryable error on the
  // last attempt, so the job ends dead.
  healthy = false;
  const r = await call("POST", "/v1/jobs", { type: "http.fetch", payload: { url: flaky }, max_attempts: 1 });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.id;
  await until("the job to die", async () => (await jobStatus(id)) === "dead");
  const page = await openPage();
  await tab(page, "dead");
  await page.waitForSelector(`#dl-${id}`, { timeout: 20000 });
  assert.match(await text(page, `#dl-${id} .why`), /500/);
  assert.equal(await text(page, `#dl-${id} [data-status]`), "dead");
  await shot(page, "dashboard-dead-letters");
  // WHEN the server works again and the job is redriven from its row
  healthy = true;
  await page.click(`#dl-${id} button.redrive`);
  // THEN the row shows it going on, to succeeded, without a reload
  await page.waitForFunction((id) => document.querySelector(`#dl-${id} [data-status]`)?.textContent === "succeeded", id, { timeout: 20000 });
  assert.equal(await jobStatus(id), "succeeded");
  assert.ok(await page.evaluate(() => window.sameDocument === true), "the page was not reloaded");
  await shot(page, "dashboard-redriven");
  // And by filter: another dies the same way; "Redrive matching" (its type) runs a bulk job,
  // whose progress and outcome the page shows, and the job succeeds.
  healthy = false;
  const again = (await call("POST", "/v1/jobs", { type: "http.fetch", payload: { url: flaky }, max_attempts: 1 })).body.id;
  await until("the second job to die", async () => (await jobStatus(again)) === "dead");
  healthy = true;
  await page.selectOption("#dr-type", "http.fetch");
  await page.click("#dr-run");
  await page.waitForFunction(() => document.querySelector("#dr-job [data-status]")?.textContent === "succeeded", null, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector("#dr-job [data-outcome]")?.textContent, null, { timeout: 10000 });
  assert.match(await text(page, "#dr-job [data-outcome]"), /retry: 1 matched, 1 changed/);
  await until("the redriven job to succeed", async () => (await jobStatus(again)) === "succeeded");
  await page.close();
});

await step("a batch's view fills in live, its succeeded count going up step by step and its members' rows with them", async () => {
  const lengths = [600, 1800, 3000, 4200];
  const r = await call("POST", "/v1/jobs/batch", {
    jobs: lengths.map((ms) => ({ type: "sleep", payload: { ms } })),
    batch: { on_complete: { type: "noop", payload: {} } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const id = r.body.batch.id;
  const page = await openPage();
  await tab(page, "batches");
  await page.fill("#b-id", id);
  await page.click("#b-open");
  await page.waitForFunction(() => document.getElementById("b-total").textContent !== "", null, { timeout: 10000 });
  assert.equal(await text(page, "#b-total"), String(lengths.length));
  // Its members are listed, in the order submitted.
  await page.waitForFunction((n) => document.querySelectorAll("#b-members tr.job").length === n, lengths.length, { timeout: 10000 });
  const members = await page.$$eval("#b-members tr.job", (rows) => rows.map((row) => row.dataset.id));
  assert.deepEqual(members, r.body.results.map((x) => x.job.id));
  // Every value the succeeded cell shows, and every set of the members' statuses, as they change.
  await page.evaluate(() => {
    const statuses = () => [...document.querySelectorAll("#b-members tr.job [data-status]")].map((e) => e.textContent).join(" ");
    window.seen = [document.getElementById("b-succeeded").textContent];
    window.statuses = [statuses()];
    new MutationObserver(() => { const v = document.getElementById("b-succeeded").textContent; if (v !== window.seen.at(-1)) window.seen.push(v); })
      .observe(document.getElementById("b-succeeded"), { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => { const v = statuses(); if (v !== window.statuses.at(-1)) window.statuses.push(v); })
      .observe(document.getElementById("b-members"), { childList: true, characterData: true, subtree: true });
  });
  await page.waitForFunction((n) => document.getElementById("b-succeeded").textContent === String(n), lengths.length, { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("b-status").textContent === "finished", null, { timeout: 10000 });
  const seen = (await page.evaluate(() => window.seen)).map(Number);
  assert.ok(seen.every((v, i) => i === 0 || v > seen[i - 1]), `only ever up: ${seen}`);
  assert.ok(new Set(seen).size >= 3, `seen step by step: ${seen}`);
  console.log(`     succeeded counts the page showed: ${seen.join(" → ")}`);
  // The members' rows moved with them: the first shown succeeded while the last still ran.
  await page.waitForFunction(() => [...document.querySelectorAll("#b-members tr.job [data-status]")].every((e) => e.textContent === "succeeded"), null, { timeout: 10000 });
  const statuses = await page.evaluate(() => window.statuses);
  assert.ok(statuses.some((v) => v.startsWith("succeeded") && !v.endsWith("succeeded")), `members seen: ${statuses.join(" | ")}`);
  console.log(`     members' statuses the page showed: ${statuses.length} sets, from "${statuses[0]}"`);
  assert.equal(await text(page, "#b-pending"), "0");
  assert.ok(await page.evaluate(() => window.sameDocument === true), "the page was not reloaded");
  await shot(page, "dashboard-batch");
  // A member's detail links its batch.
  await tab(page, "jobs");
  await page.fill("#f-id", r.body.results[0].job.id);
  await page.click("#find");
  await page.waitForSelector(`#d-links a[href="#/batches/${id}"]`);
  await page.close();
});

await step("a job's detail draws the jobs it depends on and its replays, each a click away", async () => {
  const first = (await call("POST", "/v1/jobs", { type: "sleep", payload: { ms: 1500 } })).body.id;
  const other = (await call("POST", "/v1/jobs", { type: "noop", payload: {} })).body.id;
  const r = await call("POST", "/v1/jobs", { type: "noop", payload: {}, depends_on: [first, other] });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const waiting = r.body.id;
  const page = await openPage();
  await page.fill("#f-id", waiting);
  await page.click("#find");
  await page.waitForSelector(`#d-graph .node[data-job="${first}"]`);
  await page.waitForSelector(`#d-graph .node[data-job="${other}"]`);
  // Its nodes take their jobs' colours as they end: all three succeed.
  await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`#d-graph .node[data-job="${id}"]`)?.classList.contains("n-succeeded")), [first, other], { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector("#d-graph .node.self")?.classList.contains("n-succeeded"), null, { timeout: 20000 });
  await shot(page, "dashboard-graph");
  // A replay of the first job shows on its graph, and a click on a node selects it.
  const replay = (await call("POST", `/v1/jobs/${first}/replay`)).body.id;
  await page.click(`#d-graph .node[data-job="${first}"]`);
  await page.waitForFunction((id) => document.getElementById("d-id").textContent === id, first);
  await page.waitForSelector(`#d-graph .node[data-job="${replay}"]`);
  await page.close();
});

await step("a bulk cancel by filter runs from the page as a job whose progress is shown", async () => {
  assert.equal((await call("POST", "/v1/types/noop/pause")).status, 200);
  const page = await openPage();
  const ids = [];
  try {
    for (let i = 0; i < 3; i++) ids.push((await call("POST", "/v1/jobs", { type: "noop", payload: { i } })).body.id);
    await tab(page, "bulk");
    await page.selectOption("#bk-action", "cancel");
    await page.selectOption("#bk-status", "queued");
    await page.selectOption("#bk-type", "noop");
    await page.click("#bk-run");
    await page.waitForSelector("#bk-job [data-status]");
    await page.waitForFunction(() => document.querySelector("#bk-job [data-status]")?.textContent === "succeeded", null, { timeout: 20000 });
    await page.waitForFunction(() => document.querySelector("#bk-job [data-outcome]")?.textContent, null, { timeout: 10000 });
    assert.match(await text(page, "#bk-job [data-outcome]"), /cancel: 3 matched, 3 changed, 0 skipped/);
    assert.equal(await page.evaluate(() => document.querySelector("#bk-job [data-progress] i").style.width), "100%");
    for (const id of ids) assert.equal(await jobStatus(id), "cancelled");
    await page.waitForSelector(`#bk-recent a[data-job="${await page.getAttribute("#bk-job a[data-job]", "data-job")}"]`);
    await shot(page, "dashboard-bulk");
  } finally {
    await call("POST", "/v1/types/noop/resume");
  }
  await page.close();
});

await step("schedules show their next run and paused state, pause and resume from the page, and list their runs", async () => {
  const page = await openPage();
  await tab(page, "schedules");
  const row = '#schedules tr[data-schedule="browser-every-minute"]';
  await page.waitForSelector(row);
  assert.notEqual(await text(page, `${row} .next`), "—");
  await page.click(`${row} button.pause`);
  await page.waitForFunction((row) => document.querySelector(`${row} .state`)?.textContent === "paused", row);
  assert.equal(await text(page, `${row} .next`), "—", "a paused schedule has no next run");
  await page.click(`${row} button.resume`);
  await page.waitForFunction((row) => document.querySelector(`${row} .state`)?.textContent === "active" && document.querySelector(`${row} .next`)?.textContent !== "—", row);
  // Its runs (it fires every minute, and was made when the script started).
  await page.click(`${row} button.runs`);
  await page.waitForSelector('tr[data-runs="browser-every-minute"] a[data-job]', { timeout: 70000 });
  await shot(page, "dashboard-schedules");
  await page.close();
});

await step("an operator sets a tenant's limits on the page; a refused value shows the API's message", async () => {
  const page = await openPage();
  await tab(page, "limits");
  await page.waitForSelector('[data-limit="max_running"]');
  assert.equal(await text(page, "#l-tenant"), process.env.TENANT || "default");
  await page.fill('[data-limit="max_running"]', "0");
  await page.click("#l-save");
  await page.waitForFunction(() => document.getElementById("l-msg").classList.contains("err"));
  assert.match(await text(page, "#l-msg"), /max_running/);
  await page.fill('[data-limit="max_running"]', "50");
  await page.click("#l-save");
  await page.waitForFunction(() => document.getElementById("l-msg").textContent.startsWith("saved"));
  const tenant = (await call("GET", "/v1/me")).body.tenant;
  assert.equal((await call("GET", `/v1/tenants/${tenant}/limits`)).body.limits.max_running, 50);
  await shot(page, "dashboard-limits");
  await page.fill('[data-limit="max_running"]', "");
  await page.click("#l-save");
  await until("the limit cleared", async () => (await call("GET", `/v1/tenants/${tenant}/limits`)).body.limits?.max_running == null);
  await page.close();
});

await step("an API key is made on the page (its secret shown once), works, and is revoked from the page", async () => {
  const page = await openPage();
  await tab(page, "keys");
  await page.fill("#k-name", "browser-reader");
  await page.selectOption("#k-role", "reader");
  await page.click("#k-create");
  await page.waitForFunction(() => document.getElementById("k-secret").textContent.startsWith("cvk_"));
  const key = await text(page, "#k-secret");
  const id = (await text(page, "#k-msg")).replace("created ", "");
  const asKey = () => fetch(base + "/v1/me", { headers: { authorization: "Bearer " + key } });
  const whoami = await (await asKey()).json();
  assert.equal(whoami.grants.reader, true);
  assert.equal(whoami.grants.submitter, false);
  await page.waitForSelector(`#keys tr[data-key="${id}"] button.revoke`);
  await shot(page, "dashboard-keys");
  await page.click(`#keys tr[data-key="${id}"] button.revoke`);
  await page.click(`#keys tr[data-key="${id}"] button.revoke`);  // (the second click confirms)
  await page.waitForFunction((id) => document.querySelector(`#keys tr[data-key="${id}"] .state`)?.textContent.startsWith("revoked"), id);
  assert.equal((await asKey()).status, 401);
  await page.close();
});

await step("the audit trail reads newest first", async () => {
  const page = await openPage();
  await tab(page, "audit");
  await page.waitForFunction(() => document.querySelectorAll("#audit tr").length > 3);
  const actions = await page.$$eval("#audit tr td:nth-child(3)", (tds) => tds.map((t) => t.textContent));
  const revoked = actions.findIndex((a) => a.startsWith("key.revoke"));
  const created = actions.findIndex((a) => a.startsWith("key.create"));
  assert.ok(revoked >= 0 && created > revoked, `the revoke (${revoked}) comes before the create (${created})`);
  await shot(page, "dashboard-audit");
  await page.close();
});

await step("a reader is offered no control it may not use, an admin and an operator theirs", async () => {
  if (!tokens.reader) throw new Error("READER_TOKEN is not set: the runtime must verify tokens for this step");
  // A dead job, so the dead letters have a row (with its Redrive), and a job to show in detail.
  const dead = (await call("POST", "/v1/jobs", { type: "http.fetch", payload: { url: "http://127.0.0.1:9/" }, max_attempts: 1 })).body.id;
  await until("the job to die", async () => (await jobStatus(dead)) === "dead");
  const controls = ["#submit", "#d-cancel", "#d-retry", "#d-replay", "#d-clone", "button.redrive", "#dr-run", "button.pause", "button.resume",
    "#bk-run", "#b-cancel", "#l-save", "#k-create", "button.revoke",
    '#tabs a[data-tab="bulk"]', '#tabs a[data-tab="limits"]', '#tabs a[data-tab="keys"]', '#tabs a[data-tab="audit"]'];
  const shown = (page) => page.evaluate((sels) => sels.filter((s) => [...document.querySelectorAll(s)].some((e) => e.getClientRects().length > 0)), controls);
  // Each view a role may open, with its rows loaded.
  const visit = async (page, views) => {
    const found = new Set();
    for (const [view, ready] of views) {
      await page.evaluate((v) => { location.hash = "#/" + v; }, view);
      if (ready) await page.waitForSelector(ready, { state: "attached", timeout: 20000 });
      (await shown(page)).forEach((s) => found.add(s));
    }
    return found;
  };
  const views = [["jobs", "#d-body:not([hidden])"], ["schedules", "#schedules tr[data-schedule]"], ["dead", `#dl-${dead}`], ["batches", null], ["types", '#types tr[data-type="sleep"]']];
  const open = async (role) => {
    const page = await openPage(role);
    await page.waitForFunction((r) => document.body.dataset.me === r, role);
    await page.fill("#f-id", dead);
    await page.click("#find");
    return page;
  };

  const reader = await open("reader");
  const readerSees = await visit(reader, views);
  assert.deepEqual([...readerSees], [], `a reader is shown ${[...readerSees].join(", ")}`);
  assert.equal(await reader.evaluate(() => [...document.querySelectorAll("[data-need]")].filter((e) => e.getClientRects().length > 0).length), 0);
  // A view it may not see is not opened by its address either.
  await reader.evaluate(() => { location.hash = "#/keys"; });
  await reader.waitForFunction(() => !document.getElementById("view-jobs").hidden);
  assert.ok(await reader.evaluate(() => document.getElementById("view-keys").hidden));
  await reader.evaluate(() => { location.hash = "#/dead"; });
  await shot(reader, "dashboard-reader");
  await reader.close();

  const admin = await open("admin");
  const adminSees = await visit(admin, [...views, ["keys", "#keys tr"], ["limits", "#limits tr"]]);
  for (const s of ["#submit", "#d-retry", "button.redrive", "button.pause", "#k-create", '#tabs a[data-tab="keys"]', '#tabs a[data-tab="audit"]'])
    assert.ok(adminSees.has(s), `an admin is shown ${s}`);
  assert.ok(!adminSees.has("#l-save"), "setting limits is an operator's");
  await admin.close();

  const operator = await open("operator");
  const operatorSees = await visit(operator, [...views, ["limits", "#limits tr"]]);
  for (const s of ["#submit", "#d-retry", "button.redrive", "button.pause", "#l-save", '#tabs a[data-tab="bulk"]', '#tabs a[data-tab="keys"]'])
    assert.ok(operatorSees.has(s), `an operator is shown ${s}`);
  await operator.close();
});

await step("the Types view charts each type's last hour: succeeded and failed per minute, and run time", async () => {
  const page = await openPage();
  await tab(page, "types");
  // (the steps before ran sleep jobs to success)
  const chart = '#charts .chart[data-type="sleep"]';
  await page.waitForSelector(chart, { timeout: 20000 });
  const succeeded = Number(await text(page, `${chart} .c-ok`));
  assert.ok(succeeded > 0, `sleep jobs counted as succeeded: ${succeeded}`);
  assert.ok(await page.locator(`${chart} svg rect.ok`).count() > 0, "a bar for a minute with ends");
  assert.match(await text(page, `${chart} .c-p50`), /^\d+$/);
  assert.match(await text(page, `${chart} .c-p99`), /^\d+$/);
  await shot(page, "dashboard-charts");
  await page.close();
});

await step("the whole page is under 100 KB", async () => {
  const r = await fetch(base + "/");
  const body = await r.text();
  assert.ok(body.length < 100 * 1024, `${body.length} bytes`);
});

server.close();
await browser.close();
console.log(`screenshots (${taken.length}):\n  ${taken.join("\n  ")}`);
process.exit(failed ? 1 : 0);
