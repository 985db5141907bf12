// Code computation: pure, no I/O. The Terneo defaults (raw key bytes, counter from 2000) follow
// shared/reference/terneo.md; every choice is a setting because only a real device can settle it.
import { HOTP, Secret } from 'otpauth';

export type TotpAlgorithm = 'SHA1' | 'SHA256' | 'SHA512';
export type KeyEncoding = 'raw' | 'base32';
export type TotpEpoch = '2000' | 'unix';

export interface TotpSettings {
  digits: number;
  period: number;
  algorithm: TotpAlgorithm;
  key_encoding: KeyEncoding;
  epoch: TotpEpoch;
}

export const TERNEO_DEFAULTS: TotpSettings = {
  digits: 9,
  period: 30,
  algorithm: 'SHA1',
  key_encoding: 'raw',
  epoch: '2000',
};

/** 2000-01-01T00:00:00Z in Unix milliseconds. */
export const EPOCH_2000_MS = Date.UTC(2000, 0, 1);

export interface Window {
  counter: number;
  /** Seconds since the configured epoch at the window's start, as the local API wants it. */
  time: string;
  validFromMs: number;
  validUntilMs: number;
}

export interface Code extends Window {
  auth: string;
}

export function epochOffsetMs(epoch: TotpEpoch): number {
  return epoch === '2000' ? EPOCH_2000_MS : 0;
}

/** The window that contains `nowMs` (Unix milliseconds). */
export function windowAt(nowMs: number, settings: Pick<TotpSettings, 'period' | 'epoch'>): Window {
  const offset = epochOffsetMs(settings.epoch);
  const periodMs = settings.period * 1000;
  const counter = Math.floor((nowMs - offset) / periodMs);
  const validFromMs = offset + counter * periodMs;
  return {
    counter,
    time: String(counter * settings.period),
    validFromMs,
    validUntilMs: validFromMs + periodMs,
  };
}

export class KeyError extends Error {}

/**
 * Turns a cloud `totp_key` into HMAC key bytes. The message never quotes the key.
 * raw: the key's characters are the bytes, so only printable ASCII is accepted.
 */
export function decodeKey(key: string, encoding: KeyEncoding): Uint8Array {
  if (key.length === 0) throw new KeyError('totp_key is empty');
  if (encoding === 'raw') {
    if (!/^[\x21-\x7e]+$/.test(key)) {
      throw new KeyError('totp_key holds characters other than printable ASCII');
    }
    return new Uint8Array(Buffer.from(key, 'latin1'));
  }
  const normalised = key.replace(/[\s-]/g, '').replace(/=+$/, '').toUpperCase();
  if (!/^[A-Z2-7]+$/.test(normalised)) throw new KeyError('totp_key is not base32');
  return new Uint8Array(Secret.fromBase32(normalised).bytes);
}

/** A thermostat's code generator: the key is decoded once, codes are computed per window. */
export class CodeGenerator {
  private readonly hotp: HOTP;

  constructor(
    keyBytes: Uint8Array,
    private readonly settings: TotpSettings,
  ) {
    this.hotp = new HOTP({
      secret: new Secret({ buffer: keyBytes.slice().buffer }),
      algorithm: settings.algorithm,
      digits: settings.digits,
    });
  }

  codeFor(window: Window): Code {
    return { ...window, auth: this.hotp.generate({ counter: window.counter }) };
  }

  codeAt(nowMs: number): Code {
    return this.codeFor(windowAt(nowMs, this.settings));
  }
}
