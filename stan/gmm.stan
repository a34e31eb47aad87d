// Gaussian mixture with K components in D dimensions; the component assignments z_n are
// marginalized out:
//   log p(y_n | mu, Sigma, theta) = log_sum_exp_k (log theta_k + log N(y_n | mu_k, Sigma_k)).
// Covariances: 0 identity (the seed's model), 1 diagonal, Sigma_k = diag(sigma_k)^2,
// 2 full, Sigma_k = diag(sigma_k) Omega_k diag(sigma_k) with Omega_k = L_Omega_k L_Omega_k',
// 3 tied, Sigma_k = Sigma = diag(sigma_1) Omega_1 diag(sigma_1) for every k.
//
// log N(y | mu_k, Sigma_k) is linear in features x(y) of the observation, up to a constant:
//   identity: x = y,                 beta_k = mu_k
//   diagonal: x = [y, y .* y],       beta_k = [mu_k ./ sigma_k^2, -0.5 ./ sigma_k^2]
//   full, tied: x = [y, y_i y_j (i <= j)], beta_k = [Lambda_k mu_k, -Lambda_k,ii / 2, -Lambda_k,ij]
// with Lambda_k the precision matrix. So log_sum_exp_k eta[n, k] with
//   eta[n, k] = a[k] + x_n beta_k',  a[k] = log theta_k + c_k,
// and, taking component 1 as the reference,
//   sum_n log_sum_exp_k eta[n, k] = N a[1] + (sum_n x_n) beta_1' + sum_n lse_excess_n,
//   lse_excess_n = log_sum_exp_k eta[n, k] - eta[n, 1].
// The excess is a categorical-logit GLM term (a Bernoulli-logit one for K = 2), evaluated with
// analytic gradients: one autodiff node for all N observations. For K = 2 that term is
// sum_n log1p_exp(eta[n, 2] - eta[n, 1]), evaluated by log1p_exp_glm, for K >= 3 by
// lse_excess_glm: C++ in stan/user_header.hpp (CmdStan's user header), the first for exp and
// log that vectorize, the second to compile faster than Stan Math's categorical_logit_glm.
// The data's column means m and sds s (1 for a constant column) set the working scale: the
// features are built from y - m (no cancellation where the data sit far from 0), and the means
// are sampled as (mu - m) / u (offset and multiplier) with u = s, so that the sampler's metric
// suits every column whatever its units (the identity covariance fixes the components' sds at
// 1: u = 1 there). The posterior is unchanged: an affine map with a constant Jacobian.
// Priors, per coordinate j (values from the data's scale or fixed: gmmpipe.priors):
//   mu[k, j] ~ normal(mu_location[j], mu_sd[j]), theta ~ dirichlet(alpha),
//   sigma[k, j] ~ lognormal or normal+(sigma_location[j], sigma_scale[j]),
//   Omega_k ~ lkj_corr(lkj_eta), times exp(-tr(diag(psi) Sigma_k^-1) / 2) (tied: one of each).
functions {
  // sum_n log1p_exp(alpha + x[n] * beta) = -bernoulli_logit_glm_lpmf(0 | x, alpha, beta)
  real log1p_exp_glm(matrix x, real alpha, vector beta);
  // sum_n (log_sum_exp(a + beta * x[n]') - a[1] - x[n] * beta[1]')
  //   = -categorical_logit_glm_lpmf(1 | x, a, beta')
  real lse_excess_glm(matrix x, vector a, matrix beta);
  // sum_{n = start}^{end} lse_excess_n; one C++ instance for the plain and reduce_sum paths
  real lse_excess(matrix x, int start, int end, vector a, matrix beta) {
    if (rows(beta) == 1) {
      return 0;
    }
    if (rows(beta) == 2) {
      return log1p_exp_glm(x[start : end], a[2] - a[1], (beta[2] - beta[1])');
    }
    return lse_excess_glm(x[start : end], a, beta);
  }
  real partial_lse_excess(array[] int slice, int start, int end, matrix x,
                          vector a, matrix beta) {
    return lse_excess(x, start, end, a, beta);
  }
  // Row k: [c_k, beta_k] with log N(y | mu_k, Sigma_k) = c_k + x(y) beta_k' - D log(2 pi) / 2.
  matrix gaussian_coefficients(matrix mu, matrix sigma,
                               array[] matrix L_Omega, int covariance) {
    int K = rows(mu);
    int D = cols(mu);
    if (covariance == 0) {
      return append_col(-0.5 * rows_dot_self(mu), mu);
    }
    if (covariance == 1) {
      matrix[K, D] lambda = inv_square(sigma);
      vector[K] c = -log(sigma) * rep_vector(1, D)
                    - 0.5 * rows_dot_product(lambda, square(mu));
      return append_col(append_col(c, mu .* lambda), -0.5 * lambda);
    }
    matrix[K, 1 + D + (D * (D + 1)) %/% 2] coef;
    for (k in 1 : K) {
      int c = rows(sigma) == 1 ? 1 : k; // tied: one covariance
      matrix[D, D] L_inv = mdivide_left_tri_low(diag_pre_multiply(sigma[c],
                                                                  L_Omega[c]),
                                                identity_matrix(D));
      vector[D] w = L_inv * mu[k]';
      int p = D + 1;
      coef[k, 1] = -sum(log(sigma[c])) - sum(log(diagonal(L_Omega[c])))
                   - 0.5 * dot_self(w);
      // Lambda_k = L_inv' L_inv, L_inv lower triangular: for i <= j,
      // Lambda_k[i, j] = L_inv[j : D, i]' L_inv[j : D, j], and Lambda_k mu_k' = L_inv' w
      for (i in 1 : D) {
        coef[k, 1 + i] = dot_product(L_inv[i : D, i], w[i : D]);
        coef[k, p + 1] = -0.5 * dot_self(L_inv[i : D, i]);
        p += 1;
        for (j in (i + 1) : D) {
          coef[k, p + 1] = -dot_product(L_inv[j : D, i], L_inv[j : D, j]);
          p += 1;
        }
      }
    }
    return coef;
  }
}
data {
  int<lower=1> N;
  int<lower=1> D;
  int<lower=1> K;
  matrix[N, D] y;
  int<lower=0, upper=3> covariance; // 0 identity, 1 diagonal, 2 full, 3 tied
  int<lower=0, upper=1> order_means; // 1: mu[1, 1] < ... < mu[K, 1]
  vector[D] mu_location; // mu[k, j] ~ normal(mu_location[j], mu_sd[j])
  vector<lower=0>[D] mu_sd;
  real<lower=0> alpha;
  int<lower=0, upper=1> sigma_prior; // 0: lognormal, 1: normal truncated at 0
  vector[D] sigma_location; // sigma[k, j] ~ lognormal/normal(sigma_location[j], sigma_scale[j])
  vector<lower=0>[D] sigma_scale;
  vector<lower=0>[D] psi; // exp(-tr(diag(psi) Sigma_k^-1) / 2): Sigma_k kept from singular
  real<lower=0> lkj_eta;
  int<lower=0> grainsize; // 0: evaluate the likelihood without reduce_sum
  int<lower=0, upper=1> membership; // 1: per-point log_lik and membership probabilities
}
transformed data {
  int P = covariance == 0 ? D
          : (covariance == 1 ? 2 * D : D + (D * (D + 1)) %/% 2);
  // the working scale: m = y_mean, u = mu_unit
  row_vector[D] y_mean = rep_row_vector(1.0 / N, N) * y;
  row_vector[D] mu_unit = rep_row_vector(1, D);
  for (j in 1 : D) {
    real s = sd(y[ : , j]);
    if (covariance > 0 && s > 0) {
      mu_unit[j] = s;
    }
  }
  int D_free = D - order_means; // coordinates of the means that are not ordered
  matrix[K, D_free] mu_offset = rep_matrix(tail(y_mean, D_free), K);
  matrix[K, D_free] mu_multiplier = rep_matrix(tail(mu_unit, D_free), K);
  matrix[N, P] x; // features of y_n - m: log N(y_n | mu_k, Sigma_k) is linear in x_n
  array[covariance > 0 ? D : 0] int x_square; // the columns (y_j - m_j)^2 of x
  x[ : , 1 : D] = y - rep_matrix(y_mean, N);
  if (covariance == 1) {
    x[ : , (D + 1) : P] = square(x[ : , 1 : D]);
    x_square = linspaced_int_array(D, D + 1, P);
  } else if (covariance >= 2) {
    int p = D;
    for (i in 1 : D) {
      x_square[i] = p + 1;
      for (j in i : D) {
        p += 1;
        x[ : , p] = x[ : , i] .* x[ : , j];
      }
    }
  }
  row_vector[P] x_sum = rep_row_vector(1, N) * x;
  array[N] int n_idx = linspaced_int_array(N, 1, N);
  // the priors' parameters for every entry of to_vector(mu) and to_vector(sigma)
  int K_sigma = covariance == 0 ? 0 : (covariance == 3 ? 1 : K); // distinct Sigma_k
  vector[K * D] mu_loc = to_vector(rep_matrix(mu_location', K));
  vector[K * D] mu_scale = to_vector(rep_matrix(mu_sd', K));
  vector[K_sigma * D] sigma_loc = to_vector(rep_matrix(sigma_location',
                                                       K_sigma));
  vector[K_sigma * D] sigma_sc = to_vector(rep_matrix(sigma_scale', K_sigma));
}
parameters {
  ordered[order_means ? K : 0] mu_first_z; // (mu[ : , 1] - m_1) / u_1, when ordered
  // the other coordinates (all when not ordered)
  matrix<offset=mu_offset, multiplier=mu_multiplier>[K, D_free] mu_free;
  vector[K - 1] phi; // log theta_k - log theta_1, k = 2..K
  matrix<lower=0>[K_sigma, D] sigma; // row k: scales of component k (tied: one row)
  array[covariance >= 2 ? K_sigma : 0] cholesky_factor_corr[D] L_Omega;
}
transformed parameters {
  // row k: mean k
  matrix[K, D] mu = order_means
                    ? append_col(y_mean[1] + mu_unit[1] * mu_first_z,
                                 mu_free)
                    : mu_free;
  // The weights through a softmax, so that log theta stays finite where theta underflows.
  vector[K] log_theta = log_softmax(append_row(0, phi));
  simplex[K] theta = exp(log_theta);
}
model {
  matrix[K, 1 + P] coef = gaussian_coefficients(mu - rep_matrix(y_mean, K),
                                                sigma, L_Omega, covariance);
  vector[K] a = log_theta + coef[ : , 1];
  matrix[K, P] beta = coef[ : , 2 : (1 + P)];
  to_vector(mu) ~ normal(mu_loc, mu_scale);
  // theta ~ dirichlet(alpha) on the scale of phi: the softmax's Jacobian is prod_k theta_k
  target += alpha * sum(log_theta);
  if (sigma_prior == 0) {
    to_vector(sigma) ~ lognormal(sigma_loc, sigma_sc);
  } else {
    to_vector(sigma) ~ normal(sigma_loc, sigma_sc);
  }
  for (k in 1 : size(L_Omega)) {
    L_Omega[k] ~ lkj_corr_cholesky(lkj_eta);
  }
  if (covariance > 0) {
    // exp(-tr(diag(psi) Lambda_k) / 2), as in an inverse-Wishart prior:
    // beta[k, x_square] = -diag(Lambda_k) / 2
    target += sum(beta[1 : K_sigma, x_square] * psi);
  }
  target += N * a[1] + x_sum * beta[1]';
  if (grainsize == 0) {
    target += lse_excess(x, 1, N, a, beta);
  } else {
    target += reduce_sum(partial_lse_excess, n_idx, grainsize, x, a, beta);
  }
}
generated quantities {
  vector[membership ? N : 0] log_lik;
  array[membership ? N : 0] simplex[K] p_z; // posterior membership probabilities
  if (membership) {
    matrix[K, 1 + P] coef = gaussian_coefficients(mu - rep_matrix(y_mean, K),
                                                  sigma, L_Omega, covariance);
    matrix[N, K] eta = x * coef[ : , 2 : (1 + P)]'
                       + rep_matrix((log_theta + coef[ : , 1])', N);
    for (n in 1 : N) {
      // the identity covariance's features leave out -(y_n - m) (y_n - m)' / 2
      log_lik[n] = log_sum_exp(eta[n]) - 0.5 * D * log(2 * pi())
                   - (covariance == 0 ? 0.5 * dot_self(x[n, 1 : D]) : 0);
      p_z[n] = softmax(eta[n]');
    }
  }
}
