//! Shamir secret sharing over GF(2^8), byte by byte: any `t` of the shares give the secret back, fewer
//! give nothing about it. Arithmetic uses the AES polynomial x^8 + x^4 + x^3 + x + 1.

use rand::RngCore;

/// One share: the polynomial values at `x` (1..=255) for every byte of the secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    pub x: u8,
    pub y: Vec<u8>,
}

fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

fn inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8) (a != 0).
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Split `secret` into shares for x = 1..=n, any `t` of which reconstruct it.
pub fn split(secret: &[u8], t: usize, n: usize, rng: &mut impl RngCore) -> Vec<Share> {
    assert!(
        t >= 1 && t <= n && n <= 255,
        "shamir: need 1 <= t <= n <= 255"
    );
    let mut coeffs = vec![vec![0u8; t]; secret.len()];
    for (c, s) in coeffs.iter_mut().zip(secret) {
        c[0] = *s;
        rng.fill_bytes(&mut c[1..]);
    }
    (1..=n as u8)
        .map(|x| Share {
            x,
            y: coeffs
                .iter()
                .map(|c| c.iter().rev().fold(0u8, |acc, &k| mul(acc, x) ^ k))
                .collect(),
        })
        .collect()
}

/// The secret from `t` or more shares (Lagrange interpolation at 0). Distinct, non-zero x and equal
/// lengths are required.
pub fn combine(shares: &[Share]) -> Result<Vec<u8>, String> {
    let Some(first) = shares.first() else {
        return Err("no shares".into());
    };
    let len = first.y.len();
    for (i, s) in shares.iter().enumerate() {
        if s.x == 0 || s.y.len() != len || shares[..i].iter().any(|o| o.x == s.x) {
            return Err(format!("share {i} (x = {}) is malformed or repeated", s.x));
        }
    }
    let mut out = vec![0u8; len];
    for (i, si) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is xor.
        let mut num = 1u8;
        let mut den = 1u8;
        for (j, sj) in shares.iter().enumerate() {
            if i != j {
                num = mul(num, sj.x);
                den = mul(den, sj.x ^ si.x);
            }
        }
        let l = mul(num, inv(den));
        for (o, y) in out.iter_mut().zip(&si.y) {
            *o ^= mul(l, *y);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn field_inverse_and_any_t_shares_reconstruct() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let secret: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
        let shares = split(&secret, 3, 5, &mut rng);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let got = combine(&[shares[a].clone(), shares[b].clone(), shares[c].clone()]);
                    assert_eq!(got.unwrap(), secret);
                }
            }
        }
        // Two shares of a 3-of-5 sharing interpolate a line, not the secret.
        assert_ne!(combine(&shares[..2]).unwrap(), secret);
        assert!(combine(&[shares[0].clone(), shares[0].clone()]).is_err());
    }
}
