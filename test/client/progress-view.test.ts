import { expect } from 'chai';
import { fitFigure } from '../../client/progress-view.js';

describe('progress view', function () {
  it('cuts a figure at a word boundary with an ellipsis, never mid-number, and leaves short ones alone', function () {
    const figure = '1 target class(es); kept 3000, relabelled 0, dropped 0';
    expect(fitFigure(figure, 80)).to.equal(figure);
    expect(fitFigure(figure, figure.length)).to.equal(figure);
    expect(fitFigure(figure, 40)).to.equal('1 target class(es); kept 3000\u2026');
    for (let w = 2; w < figure.length; w++) {
      const cut = fitFigure(figure, w);
      expect(cut.length, `width ${w}`).to.be.at.most(w);
      expect(cut.endsWith('\u2026'), `width ${w}`).to.equal(true);
    }
    expect(fitFigure('loss 4.6341 after 3 epochs', 14)).to.equal('loss 4.6341\u2026');
    expect(fitFigure(figure, 1)).to.equal('');
  });
});
