// Gaussian mixture with known identity covariance; the component assignments z_n are
// marginalized out:
//   log p(y_n | mu, theta) = log_sum_exp_k (log theta_k + normal_lpdf(y_n | mu_k, I)).
// Up to a constant this is log_sum_exp_k eta[n, k] with
//   eta[n, k] = a[k] + y_n mu_k',  a[k] = log theta_k - mu_k mu_k' / 2,
// and, taking component 1 as the reference,
//   sum_n log_sum_exp_k eta[n, k] = N a[1] + (sum_n y_n) mu_1' + sum_n lse_excess_n,
//   lse_excess_n = log_sum_exp_k eta[n, k] - eta[n, 1].
// The excess is a categorical-logit GLM term (a Bernoulli-logit one for K = 2), which
// Stan evaluates with analytic gradients: one autodiff node for all N observations.
functions {
  real lse_excess(matrix y, vector a, matrix mu) {
    if (rows(mu) == 1) {
      return 0;
    }
    if (rows(mu) == 2) {
      return -bernoulli_logit_glm_lpmf(0 | y, a[2] - a[1], (mu[2] - mu[1])');
    }
    return -categorical_logit_glm_lpmf(1 | y, a, mu');
  }
  real partial_lse_excess(array[] int slice, int start, int end, matrix y,
                          vector a, matrix mu) {
    return lse_excess(y[start : end], a, mu);
  }
}
data {
  int<lower=1> N;
  int<lower=1> D;
  int<lower=1> K;
  matrix[N, D] y;
  real<lower=0> mu_sd;
  real<lower=0> alpha;
  int<lower=0> grainsize; // 0: evaluate the likelihood without reduce_sum
  int<lower=0, upper=1> membership; // 1: per-point log_lik and membership probabilities
}
transformed data {
  row_vector[D] y_sum = rep_row_vector(1, N) * y;
  array[N] int n_idx = linspaced_int_array(N, 1, N);
}
parameters {
  matrix[K, D] mu; // row k: mean of component k
  simplex[K] theta;
}
model {
  vector[K] a = log(theta) - 0.5 * rows_dot_self(mu);
  to_vector(mu) ~ normal(0, mu_sd);
  theta ~ dirichlet(rep_vector(alpha, K));
  target += N * a[1] + y_sum * mu[1]';
  if (grainsize == 0) {
    target += lse_excess(y, a, mu);
  } else {
    target += reduce_sum(partial_lse_excess, n_idx, grainsize, y, a, mu);
  }
}
generated quantities {
  vector[membership ? N : 0] log_lik;
  array[membership ? N : 0] simplex[K] p_z; // posterior membership probabilities
  if (membership) {
    vector[K] log_theta = log(theta);
    for (n in 1 : N) {
      vector[K] lp;
      for (k in 1 : K) {
        lp[k] = log_theta[k] + normal_lpdf(y[n] | mu[k], 1);
      }
      log_lik[n] = log_sum_exp(lp);
      p_z[n] = softmax(lp);
    }
  }
}
