// The README's picture of report.html:
// `npx tsx scripts/screenshot-report.ts out/demo/report.html docs/report-demo.png 2400` (the top 2400 px, at 75%).
import { resolve } from 'node:path';
import sharp from 'sharp';
import { checkReportPage, findChromium } from './chromium.js';

const [html, png, top] = process.argv.slice(2);
if (!html || !png?.endsWith('.png')) throw new Error('usage: screenshot-report.ts <report.html> <out.png>');
const chromium = findChromium();
if (!chromium) throw new Error('no Chromium found: run `bash scripts/setup-chromium.sh` or set CHROMIUM_PATH');
const page = await checkReportPage(chromium, resolve(html), resolve(png));
if (top) {
  const full = await sharp(resolve(png)).toBuffer();
  const { width = 0, height = 0 } = await sharp(full).metadata();
  await sharp(full)
    .extract({ left: 0, top: 0, width, height: Math.min(height, Number(top)) })
    .resize(Math.round(width * 0.75))
    .png({ palette: true })
    .toFile(resolve(png));
}
console.log(
  `${png}: ${page.charts.length} charts, ${page.images.length} thumbnails, ${page.consoleErrors.length} console errors, ${page.externalRequests.length} external requests`,
);
