import type { CopyState } from './types.js';

/** The copy life cycle (docs/design.md); every state change in the store keeps to this table. */
const NEXT: Readonly<Record<CopyState, readonly CopyState[]>> = {
  making: ['ready', 'failed'],
  ready: ['mapped', 'releasing', 'failed'],
  mapped: ['releasing', 'failed'],
  releasing: ['gone', 'failed'],
  gone: [],
  // A mapped copy whose volume was lost is marked failed; releasing its host then removes it.
  failed: ['releasing', 'gone'],
};

export function canMove(from: CopyState, to: CopyState): boolean {
  return NEXT[from].includes(to);
}

/** States whose volume should exist on disk. */
export function holdsVolume(state: CopyState): boolean {
  return state === 'making' || state === 'ready' || state === 'mapped' || state === 'releasing';
}
