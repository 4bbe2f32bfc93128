// Loads a report.html in headless Chromium (puppeteer-core driving the system's Chromium; no
// browser download) and says what a person's browser would show: console errors, network
// requests, charts drawn, thumbnails decoded. Used by test/report/browser.test.ts and by
// scripts/screenshot-report.ts for the README's picture.
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import puppeteer from 'puppeteer-core';

/** The Chromium executable (CHROMIUM_PATH, else the usual names on PATH), or undefined. */
export function findChromium(): string | undefined {
  for (const name of [process.env.CHROMIUM_PATH, 'chromium', 'chromium-browser', 'google-chrome']) {
    if (!name) continue;
    try {
      return execFileSync('sh', ['-c', `command -v "${name}"`], { encoding: 'utf8' }).trim() || undefined;
    } catch {
      // not on PATH
    }
  }
  return undefined;
}

export interface PageCheck {
  consoleErrors: string[];
  /** Requests other than the page itself and data: URIs (each one was refused). */
  externalRequests: string[];
  /** Per <figure class="chart">: whether it holds an SVG that was laid out with a size. */
  charts: { label: string; svg: boolean; width: number; height: number }[];
  /** Per <img>: whether it decoded, and its natural width. */
  images: { alt: string; decoded: boolean; naturalWidth: number }[];
  /** Rows of the per-class table's body. */
  classRows: number;
  title: string;
}

export async function checkReportPage(executablePath: string, htmlFile: string, screenshot?: string): Promise<PageCheck> {
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    // --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const consoleErrors: string[] = [];
    const externalRequests: string[] = [];
    const own = pathToFileURL(htmlFile).href;
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.setRequestInterception(true);
    page.on('request', (r) => {
      const url = r.url();
      if (url === own || url.startsWith('data:')) void r.continue();
      else {
        externalRequests.push(url);
        void r.abort();
      }
    });
    await page.goto(own, { waitUntil: 'load' });
    const result = await page.evaluate(async () => {
      const images = await Promise.all(
        [...document.querySelectorAll('img')].map(async (img) => {
          const decoded = await img.decode().then(
            () => true,
            () => false,
          );
          return { alt: img.alt, decoded, naturalWidth: img.naturalWidth };
        }),
      );
      const charts = [...document.querySelectorAll('figure.chart')].map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        return { label: f.getAttribute('aria-label') ?? '', svg: !!svg, width: box?.width ?? 0, height: box?.height ?? 0 };
      });
      return { images, charts, classRows: document.querySelectorAll('table.classes tbody tr').length, title: document.title };
    });
    if (screenshot) await page.screenshot({ path: screenshot as `${string}.png`, fullPage: true });
    return { consoleErrors, externalRequests, ...result };
  } finally {
    await browser.close();
  }
}
