import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { InjectedFault, Undo, faultPoint, injectFault, undoFailuresOf, withUndo } from '../../src/undo.js';
import { ToastnetError } from '../../src/errors.js';

describe('Undo', () => {
  it('on a failure runs the registered undos last first, and rethrows the original error itself', () => {
    const done: string[] = [];
    const boom = new Error('step 3 failed');
    assert.throws(() => withUndo((u) => {
      u.push('one', () => done.push('undo one'));
      u.push('two', () => done.push('undo two'));
      throw boom;
    }), (err) => err === boom);
    assert.deepEqual(done, ['undo two', 'undo one']);
  });

  it('a failing undo does not skip the ones before it; its error is attached, the original is what is thrown', () => {
    const done: string[] = [];
    const original = new ToastnetError('kernel', 'the network would not come up');
    let seen: unknown;
    try {
      withUndo((u) => {
        u.push('give the address back', () => done.push('address'));
        u.push('remove the network', () => {
          throw new Error('EBUSY');
        });
        u.push('remove the elements', () => done.push('elements'));
        throw original;
      });
    } catch (err) {
      seen = err;
    }
    assert.equal(seen, original);
    assert.deepEqual(done, ['elements', 'address'], 'the address came back though an undo before it failed');
    assert.deepEqual(undoFailuresOf(seen).map((f) => [f.step, (f.error as Error).message]), [['remove the network', 'EBUSY']]);
    assert.deepEqual(original.details.undoFailures, ['remove the network: EBUSY']);
    assert.equal(original.message, 'the network would not come up', 'the message is the original one');
  });

  it('success runs no undo and returns the work\'s value', () => {
    let undone = false;
    assert.equal(withUndo((u) => {
      u.push('x', () => (undone = true));
      return 42;
    }), 42);
    assert.equal(undone, false);
  });

  it('rollback of an Undo used by hand runs each undo once', () => {
    const u = new Undo();
    let n = 0;
    u.push('x', () => n++);
    assert.throws(() => u.rollback(new Error('a')));
    assert.throws(() => u.rollback(new Error('b')));
    assert.equal(n, 1);
  });
});

describe('fault points', () => {
  it('throw once where a fault was injected, and nowhere else', () => {
    faultPoint('a'); // nothing injected
    injectFault('b');
    faultPoint('a');
    assert.throws(() => faultPoint('b'), (err) => err instanceof InjectedFault && err.point === 'b');
    faultPoint('b'); // once only
  });
});
