// The dashboard in a real browser (headless Chromium driven by playwright-core) against a
// running local runtime: submit a job from the page and watch it to the end without a reload,
// cancel a running job from the page, replay a finished one with an edited payload, see a paused
// type marked, and keep updating with the WebSocket blocked.
// Env: BASE_URL (the runtime), PLAYWRIGHT_DIR (where playwright-core is installed),
// SCREENSHOT_DIR (where the screenshots go).
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(process.env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");
const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const text = (page, sel) => page.locator(sel).textContent();
const status = (page) => text(page, "#d-status");
let failed = false;

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

async function submitFromPage(page, type, payload) {
  await page.selectOption("#type", type);
  await page.fill("#payload", JSON.stringify(payload));
  await page.click("#submit");
  await page.waitForFunction(() => document.getElementById("submitted").textContent.startsWith("submitted "));
  return (await text(page, "#submitted")).replace("submitted ", "");
}

await step("a job submitted from the page shows its progress moving and ends succeeded, without a reload", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket");
  await page.evaluate(() => { window.sameDocument = true; });
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
  await page.screenshot({ path: `${shots}/dashboard-succeeded.png`, fullPage: true });
  await page.close();
});

await step("a running job is cancelled from the page", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket");
  await submitFromPage(page, "sleep", { ms: 60000 });
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "running", null, { timeout: 20000 });
  await page.waitForFunction(() => !document.getElementById("d-cancel").disabled);
  await page.click("#d-cancel");
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "cancelled", null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/dashboard-cancelled.png`, fullPage: true });
  await page.close();
});

await step("a finished job is replayed from the page with an edited payload, each linking the other", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket");
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
  await page.screenshot({ path: `${shots}/dashboard-replayed.png`, fullPage: true });
  await page.close();
});

await step("the submit form offers the types a user submits, not the deployment's own", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForFunction(() => document.querySelectorAll("#type option").length > 0);
  const offered = await page.$$eval("#type option", (os) => os.map((o) => o.textContent));
  const filter = await page.$$eval("#f-type option", (os) => os.map((o) => o.textContent));
  assert.ok(offered.includes("sleep") && !offered.includes("conveyor.bulk"), offered.join(","));
  assert.ok(filter.includes("conveyor.bulk"), "the history filter still lists it");
  await page.close();
});

await step("a paused type says so in the page's table of types", async () => {
  const page = await browser.newPage();
  await page.goto(base);
  const post = (path) => page.evaluate((p) => fetch(p, { method: "POST", headers: { "content-type": "application/json" } }).then((r) => r.status), path);
  assert.equal(await post("/v1/types/noop/pause"), 200);
  await submitFromPage(page, "noop", {});
  await page.waitForFunction(() => [...document.querySelectorAll("#queues tr")].some((tr) => tr.textContent.startsWith("noop") && tr.textContent.includes("paused")), null, { timeout: 20000 });
  assert.equal(await status(page), "queued");
  await page.screenshot({ path: `${shots}/dashboard-paused.png`, fullPage: true });
  assert.equal(await post("/v1/types/noop/resume"), 200);
  await page.waitForFunction(() => document.getElementById("d-status").textContent === "succeeded", null, { timeout: 20000 });
  await page.close();
});

await step("with the WebSocket blocked the page keeps updating by its fallback", async () => {
  const page = await browser.newPage();
  // Every WebSocket the page opens is accepted by the browser's side and closed at once: no
  // server ever answers on it.
  await page.routeWebSocket(/\/ws/, (ws) => ws.close());
  await page.goto(base);
  await page.waitForFunction(() => ["events", "polling"].includes(document.getElementById("transport").textContent), null, { timeout: 20000 });
  const transport = await text(page, "#transport");
  // A job submitted elsewhere (not from this page) shows up and reaches succeeded.
  const r = await fetch(`${base}/v1/jobs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ type: "sleep", payload: { ms: 1500 } }) });
  assert.equal(r.status, 202);
  const { id } = await r.json();
  await page.waitForSelector(`#h-${id}`, { timeout: 20000 });
  await page.waitForFunction((id) => document.querySelector(`#h-${id} .st`)?.textContent === "succeeded", id, { timeout: 30000 });
  assert.ok(["events", "polling"].includes(await text(page, "#transport")), `still on the fallback (${transport})`);
  await page.screenshot({ path: `${shots}/dashboard-fallback.png`, fullPage: true });
  await page.close();
});

await step("the whole page is under 100 KB", async () => {
  const r = await fetch(base + "/");
  const body = await r.text();
  assert.ok(body.length < 100 * 1024, `${body.length} bytes`);
});

await browser.close();
console.log(`screenshots: ${shots}/dashboard-*.png`);
process.exit(failed ? 1 : 0);
